"""
The fault table: every fault the suite injects, when, and what must happen after it.

One row per fault. `test` names the test that injects it: a row of the parametrized
`tests/faults/test_process_faults.py::test_fault[<name>]`, or an existing test elsewhere that
already covers that fault (the table points to it rather than duplicating it).
`tests/faults/test_table.py` checks that every named test exists and that every row of the
parametrized test is in the table. docs/explanation/faults.md gives the same table with the
outcomes measured.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The parametrized test of this directory; rows it runs name it as `test`.
MATRIX = "tests/faults/test_process_faults.py::test_fault"


@dataclass(frozen=True)
class Fault:
    """One fault: which process, at which moment, and the outcome the suite checks."""

    name: str
    process: str
    moment: str
    expected: str
    test: str = MATRIX


FAULTS: list[Fault] = [
    Fault(
        "server-worker-mid-request",
        "a server worker process (uvicorn under gunicorn), SIGKILL",
        "a POST creating a work request, half of its body received",
        "the client sees the connection drop; nothing was created; gunicorn starts a new "
        "worker; the client's retry creates exactly one work request, which completes",
    ),
    Fault(
        "server-worker-mid-upload",
        "a server worker process, SIGKILL",
        "an upload chunk half received (its bytes streaming to the partial file)",
        "the client's probe learns how many bytes the server kept and resumes from there; the "
        "file completes with the declared SHA-256; no store holds a partial or unverified file",
    ),
    Fault(
        "gunicorn-master",
        "the gunicorn master (arbiter), SIGKILL",
        "while serving",
        "its uvicorn workers stop with it (parent-death signal: "
        "tests/integration/test_process_lifetime.py); restarted by the supervisor on the same "
        "port, the API answers and new work runs",
    ),
    Fault(
        "scheduler-mid-pass",
        "the scheduler (Celery worker, beat as a thread), SIGKILL",
        "inside a scheduling pass's transaction (waiting for the scheduler's advisory lock)",
        "the pass's transaction is rolled back, nothing is half-assigned; once restarted, the "
        "scheduler's fallback pass assigns the work, which completes",
    ),
    Fault(
        "celery-worker-mid-job",
        "the Celery worker of the `celery` and `workflows` queues, SIGKILL",
        "mid-job: a workflow's roll-up waiting (inside its transaction) for the workflow's row",
        "the job's transaction is rolled back and its message is lost with it; restarted, "
        "the periodic workflow sweep rolls the workflow up: it completes; its pool processes "
        "never outlive it (tests/integration/test_process_lifetime.py)",
    ),
    Fault(
        "beat",
        "Celery beat (a thread of the scheduler process), SIGKILL of its process",
        "while work is pending",
        "restarted with its process; its schedule is in memory (nothing to corrupt); the "
        "fallback pass and lease expiry run again",
    ),
    Fault(
        "external-worker-mid-task",
        "the worker daemon, SIGKILL (its task process dies with it)",
        "a `sleep` task running",
        "restarted with its token, it asks for work while the server thinks it runs one: the "
        "old work request is aborted (worker-failed) and a retry superseding it completes",
    ),
    Fault(
        "external-worker-mid-task-other-worker",
        "the worker daemon, SIGKILL, not restarted",
        "a `sleep` task running, another worker idle",
        "after the lease grace period the work request is aborted and retried; the other "
        "worker completes the retry within the grace period + 10 s; the late report changes "
        "nothing",
        "tests/integration/test_scheduling_end_to_end.py::"
        "test_killed_worker_work_is_retried_on_the_other_one",
    ),
    Fault(
        "redis-restart",
        "Redis, graceful restart (snapshot saved and loaded)",
        "a work request created just before",
        "Celery, Channels and the worker websockets reconnect; the work completes",
    ),
    Fault(
        "redis-restart-data-lost",
        "Redis, SIGKILL and restart without its data",
        "work created while it is down",
        "creating work still succeeds (the lost notification and queued pass are re-derived "
        "from PostgreSQL); the work completes",
    ),
    Fault(
        "redis-down-notifications",
        "Redis stopped, then started without its data",
        "work created while it is down, fallback pass 10 min away",
        "the worker is told within seconds of Redis's return, not at the fallback pass",
        "tests/integration/test_redis_recovery.py::"
        "test_work_created_while_redis_is_down_starts_once_it_is_back",
    ),
    Fault(
        "postgres-restart",
        "PostgreSQL, fast shutdown and start",
        "a task running on the worker",
        "requests fail while it is down; the pooled connections are replaced; the completion "
        "is reported (the worker retries it) and the work ends completed",
    ),
    Fault(
        "postgres-connection-killed",
        "one server connection, pg_terminate_backend",
        "mid-transaction: a worker's completion report waiting on a row lock",
        "that request fails and its transaction is rolled back; the worker reports again; "
        "the work request is completed once",
    ),
    Fault(
        "local-store-full",
        "the Local store's filesystem (a full tmpfs)",
        "the verified file moves into the store",
        "507 `Insufficient storage` problem; no partial or temporary file in the store; a "
        "probe completes the file once there is room",
        "debusine/server/api/tests/test_uploads.py::"
        "test_a_full_store_is_a_507_and_keeps_no_partial_file",
    ),
    Fault(
        "upload-directory-full",
        "the server's upload directory (a full tmpfs)",
        "a chunk being written",
        "507 problem; what the request wrote is removed; the client resumes from the bytes "
        "received before it",
        "debusine/server/api/tests/test_uploads.py::"
        "test_a_full_upload_directory_is_a_507_and_keeps_nothing_of_the_request",
    ),
    Fault(
        "s3-down",
        "the S3 store's service, stopped",
        "the verified file goes into the store",
        "503 `File store unavailable` problem with Retry-After, within seconds; nothing "
        "changes; a probe completes the file once the service is back",
        "tests/faults/test_store_faults.py::"
        "test_s3_store_down_is_a_retriable_503_that_changes_nothing",
    ),
    Fault(
        "s3-slow",
        "the S3 store's service, accepting connections and never answering",
        "the verified file goes into the store",
        "503 problem within the store's time limits (connect_timeout, read_timeout, "
        "max_attempts), not after minutes; nothing changes",
        "tests/faults/test_store_faults.py::"
        "test_slow_s3_store_is_a_retriable_503_within_its_time_limits",
    ),
    Fault(
        "worker-disk-full",
        "the worker's task filesystem (a full tmpfs)",
        "a task starts writing",
        "that work request ends as an `error` with code `no-space` and a message naming the "
        "full filesystem; the worker keeps serving, and runs the next work once there is room",
        "tests/faults/test_process_faults.py::test_worker_disk_full_fails_the_work_not_the_worker",
    ),
]

FAULTS_BY_NAME = {fault.name: fault for fault in FAULTS}
