"""
Executors: how tasks run commands inside an environment (a system tarball) on a worker.

`EnvironmentCache` keeps the environments a worker downloaded (an LRU of system tarballs);
`UnshareExecutor` extracts one into a private directory and runs commands in it inside
user, mount and PID namespaces (`unshare(1)`). No Django here.
"""

from debusine.tasks.executors.cache import (
    CachedEnvironment,
    EnvironmentCache,
    EnvironmentCacheError,
)
from debusine.tasks.executors.unshare import ExecutorError, UnshareExecutor, unshare_available

__all__ = [
    "CachedEnvironment",
    "EnvironmentCache",
    "EnvironmentCacheError",
    "ExecutorError",
    "UnshareExecutor",
    "unshare_available",
]
