"""
Every metric family the server exports: its name, type, help and bucket bounds.

Names carry the `debusine_` prefix; exposition adds `_total` to counters and `_bucket`,
`_sum`, `_count` to histograms.
"""

from __future__ import annotations

#: Queue time (created to started) and run time (started to completed) of work requests, in
#: seconds. Frozen in migration 0005_metric_counts: a change needs a new migration.
QUEUE_SECONDS_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400,
)  # fmt: skip
RUN_SECONDS_BUCKETS = QUEUE_SECONDS_BUCKETS

#: HTTP request handling time, in seconds.
REQUEST_SECONDS_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
)  # fmt: skip

#: Scheduling pass duration and dispatch latency, in seconds.
SCHEDULER_SECONDS_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
)  # fmt: skip

PREFIX = "debusine_"

# Families computed from the database at each scrape.
WORK_REQUESTS = PREFIX + "work_requests"
WORK_REQUEST_QUEUE_SECONDS = PREFIX + "work_request_queue_seconds"
WORK_REQUEST_RUN_SECONDS = PREFIX + "work_request_run_seconds"
WORKERS = PREFIX + "workers"
WORKER_ARCHITECTURES = PREFIX + "worker_architectures"
WORKER_SLOTS = PREFIX + "worker_slots"
ARTIFACTS = PREFIX + "artifacts"
COLLECTIONS = PREFIX + "collections"
FILE_STORE_SIZE = PREFIX + "file_store_size_bytes"
FILE_STORE_MAX_SIZE = PREFIX + "file_store_max_size_bytes"
USERS = PREFIX + "users"
TOKENS = PREFIX + "tokens"
WORKSPACES = PREFIX + "workspaces"
SCOPES = PREFIX + "scopes"

# Dynamic worker pools (debusine.server.worker_pools), from the database at each scrape.
WORKER_POOL_INSTANCES = PREFIX + "worker_pool_instances"
WORKER_POOL_MAX_INSTANCES = PREFIX + "worker_pool_max_instances"
WORKER_POOL_RUNTIME_SECONDS = PREFIX + "worker_pool_runtime_this_month_seconds"
WORKER_POOL_LAUNCHES = PREFIX + "worker_pool_launches"  # counter: ..._total
WORKER_POOL_LAUNCH_FAILURES = PREFIX + "worker_pool_launch_failures"  # counter: ..._total
WORKER_POOL_TERMINATIONS = PREFIX + "worker_pool_terminations"  # counter: ..._total
#: Seconds from a pool instance's launch to its worker's registration (recorded by the
#: provisioner), and from creation to start of the work requests pool workers start (kept by
#: a trigger, migration 0010): labels worker_pool and architecture. Bounds frozen in 0010.
WORKER_POOL_BOOT_SECONDS = PREFIX + "worker_pool_boot_seconds"
WORKER_POOL_QUEUE_SECONDS = PREFIX + "worker_pool_queue_seconds"
POOL_SECONDS_BUCKETS = QUEUE_SECONDS_BUCKETS
#: Labels of `debusine_worker_pool_instances` `state`.
WORKER_POOL_INSTANCE_STATES = ("booting", "running", "draining")

# Families computed from Redis at each scrape.
CELERY_QUEUE_LENGTH = PREFIX + "celery_queue_length"

# Families of events, recorded by processes in Redis (`debusine.server.metrics.events`).
HTTP_REQUEST_SECONDS = PREFIX + "http_request_duration_seconds"
SCHEDULER_PASS_SECONDS = PREFIX + "scheduler_pass_duration_seconds"
DISPATCH_LATENCY_SECONDS = PREFIX + "dispatch_latency_seconds"
UPLOAD_BYTES = PREFIX + "upload_bytes"  # a counter: exposed as debusine_upload_bytes_total

#: Celery queues whose length is exported (the default queue and the dedicated ones).
CELERY_QUEUES = ("celery", "scheduler", "provisioner")

#: Kinds of scheduling pass (the `kind` label).
PASS_KINDS = ("worker", "change", "fallback")

#: HTTP methods of the request histogram; anything else is counted as "other".
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

#: Value of `host_architecture` for work requests without one, and of labels whose value
#: is not among the known ones (an architecture nobody runs, a misspelt one).
NO_ARCHITECTURE = "none"
OTHER = "other"

#: Architectures always known (Debian's release and ports architectures); workers may add more.
DEBIAN_ARCHITECTURES = (
    "all", "alpha", "amd64", "arm64", "armel", "armhf", "hppa", "hurd-amd64", "hurd-i386",
    "i386", "loong64", "m68k", "mips64el", "mipsel", "powerpc", "ppc64", "ppc64el", "riscv64",
    "s390x", "sh4", "sparc64", "x32",
)  # fmt: skip

#: Labels of `debusine_workers` `state`.
WORKER_STATES = ("disabled", "disconnected", "idle", "busy")
#: Value of `worker_pool` for workers in no pool (static workers).
NO_POOL = "none"
