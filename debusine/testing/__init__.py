"""
Development and test tooling: never imported by production modules.

The development stack (`make run`), the embedded PostgreSQL and Redis it may start, throwaway
server instances for integration tests and benchmarks, the test bootstrap (`make test`), test
data factories, worker-process helpers, a stub server for the worker daemon's tests and the
moto S3 launcher. tests/test_layout.py fails when a module outside this package (other than
tests) imports it; the one allowed exception is documented there.
"""
