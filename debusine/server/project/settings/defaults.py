"""
Every setting a deployment may change, with its default and what it means.

Override any of them in `/etc/debusine/server/settings.toml` (top-level keys with the names
below) or with an environment variable: `DEBUSINE_*` settings by their own name, the Django
ones (`DEBUG`, `ALLOWED_HOSTS`, ...) with a `DEBUSINE_` prefix. Lists are comma-separated in
the environment. `docs/reference/settings.md` lists the same settings for operators.

Empty strings mean "work it out": see `debusine.server.project.instance` for how the data
directory, database and Redis are chosen when they are not given.
"""

from pathlib import Path

# --- Instance -------------------------------------------------------------------------------

# Directory holding this instance's state: the local file store, partial uploads, the secret
# key, and (for the development stack) the embedded PostgreSQL and Redis. Empty: `.data/` in a
# source checkout, `/var/lib/debusine/server` otherwise.
DEBUSINE_DATA_DIR = Path()

# PostgreSQL connection URL, e.g. `postgresql://debusine@localhost:5432/debusine` or
# `postgresql:///debusine?host=/run/postgresql`. Empty: the URL recorded in
# `<data dir>/database-url` by the development stack, else PostgreSQL on 127.0.0.1:5432.
DEBUSINE_DATABASE_URL = ""

# Connections each server (ASGI) process keeps in its PostgreSQL connection pool
# (psycopg_pool), at most. Each gunicorn worker has its own pool: keep workers x pool size (plus
# other processes) below PostgreSQL's max_connections. 0: no pool, one connection per request.
# Other processes (debusine-admin, tests) do not pool.
DEBUSINE_DATABASE_POOL_SIZE = 8

# PostgreSQL streaming replicas that read-only requests may read from, as URLs like
# DEBUSINE_DATABASE_URL (comma-separated in the environment). Empty: everything reads from the
# primary. Only GET/HEAD requests of users and anonymous visitors read from a replica; workers'
# requests, anything that writes, the scheduler and every other process use the primary.
DEBUSINE_DATABASE_REPLICA_URLS: list[str] = []

# Seconds a replica may be behind the primary and still be read from; a replica further behind,
# not streaming, or not answering is left alone until it catches up (the primary serves).
DEBUSINE_DATABASE_REPLICA_MAX_LAG = 5.0

# Read-your-writes: seconds during which a caller (token, session, or client address) that
# wrote reads only from the primary. Keep it above DEBUSINE_DATABASE_REPLICA_MAX_LAG.
DEBUSINE_DATABASE_REPLICA_PIN_SECONDS = 10

# Seconds between two checks of a replica's health and lag, in each server process.
DEBUSINE_DATABASE_REPLICA_CHECK_INTERVAL = 1.0

# Redis URL for the Celery broker and the Channels layer, e.g. `redis://localhost:6379/0` or
# `unix:///run/redis/redis.sock`. Empty: `<data dir>/redis-url`, else 127.0.0.1:6379.
DEBUSINE_REDIS_URL = ""

# Prefix of every Redis key this instance uses (Celery queues, Channels groups), so that several
# instances (or test runs) can share one Redis server without reading each other's messages.
# Empty: a prefix of the data directory's own for a development stack (`make run`), else
# `debusine`.
DEBUSINE_REDIS_KEY_PREFIX = ""

# Whether the development stack (`make run`) starts an embedded PostgreSQL and Redis under the
# data directory: "auto" (only when none is configured or answering on 127.0.0.1), "always"
# or "never".
DEBUSINE_EMBEDDED_SERVICES = "auto"

# Secret key for sessions and CSRF. Empty: read from `<data dir>/secret-key` (`make run` creates
# it); if that file does not exist either, an insecure development key is used and
# `debusine-admin check --deploy` fails unless DEBUG is on.
DEBUSINE_SECRET_KEY = ""

# This server is one of several serving the same database behind a load balancer (haproxy):
# every file store it uses must be reachable from all of them (S3), so a server configured
# with a local store refuses to start. Partial uploads are kept in the database's upload
# records and resumed on any server (see docs/howto/deploy-server.md).
DEBUSINE_MULTI_SERVER = False

# --- Web --------------------------------------------------------------------------------

# Development mode: detailed error pages. Never enable it in production.
DEBUG = False

# Host names this server answers to. Empty: localhost names plus DEBUSINE_FQDN.
ALLOWED_HOSTS: list[str] = []

# Public host name of the server (used in ALLOWED_HOSTS and in `debusine-admin info`).
DEBUSINE_FQDN = "localhost"

# Trust `X-Forwarded-Proto: https` from the reverse proxy when building absolute URLs.
DEBUSINE_TRUST_X_FORWARDED_PROTO = True

# Reverse proxies whose forwarded headers (`X-Forwarded-For`, `X-Forwarded-Proto`,
# `X-Forwarded-Host`, `Forwarded`) are believed: addresses or networks (`10.0.0.0/8`), and
# `unix` for a proxy connected to the server's Unix socket (the packaged nginx). From any
# other peer those headers are dropped before anything reads them. From a trusted one, the
# client address (rate limits, logs) is the last `X-Forwarded-For` entry.
DEBUSINE_TRUSTED_PROXIES: list[str] = ["127.0.0.1", "::1", "unix"]

# Downloads from local file stores through the reverse proxy: the server answers with
# `X-Accel-Redirect: <location>/<store name>/<entry>` and no body, and nginx sends the file
# from an `internal` location aliased to the store's directory (the shipped virtual host has
# `/_debusine_store/Default/`). Empty: the server streams the file itself.
DEBUSINE_X_ACCEL_REDIRECT_LOCATION = ""

# Number of gunicorn worker processes serving HTTP and websockets. 0: (2 x CPU cores) + 1.
DEBUSINE_SERVER_WORKERS = 0

# Bytes of a text file or log the web UI's file viewer shows (and searches); larger files show
# their beginning and a link to the raw download.
DEBUSINE_WEB_FILE_VIEW_MAX_SIZE = 2 * 1024 * 1024

# --- Tenancy ----------------------------------------------------------------------------

# Scope used when a request carries no `X-Debusine-Scope` header (workers never send one).
DEBUSINE_DEFAULT_SCOPE = "debusine"

# Workspace used when an API request names none.
DEBUSINE_DEFAULT_WORKSPACE = "System"

# --- Files ------------------------------------------------------------------------------

# Base directory of the `Default` local file store. Empty: `<data dir>/store`.
DEBUSINE_STORE_DIRECTORY = Path()

# Where partial uploads live until their SHA-256 has been checked. Empty: `<data dir>/uploads`.
# Keep it on the same filesystem as the local store so that a verified upload is a rename.
DEBUSINE_UPLOAD_DIRECTORY = Path()

# Largest single file accepted in an artifact, in bytes (0: no limit). Artifact creation
# refuses a larger declared size with a 413 problem, before anything is stored.
DEBUSINE_MAX_FILE_SIZE = 0

# Largest body of one file-upload request (`PUT .../files/<path>/`), in bytes: a larger chunk
# is refused with a 413 problem before anything is written. Clients send 50 MiB chunks. Keep
# the reverse proxy's limit (nginx `client_max_body_size`) at least this large.
DEBUSINE_MAX_UPLOAD_CHUNK_SIZE = 64 * 1024 * 1024

# --- API ----------------------------------------------------------------------------------

# Largest JSON request body accepted by the API, in bytes (Django's
# DATA_UPLOAD_MAX_MEMORY_SIZE): a larger one is refused with a 413 problem.
DEBUSINE_MAX_REQUEST_BODY_SIZE = 10 * 1024 * 1024

# Token brute force protection: a client address that presented this many refused tokens
# (unknown, expired or disabled) within DEBUSINE_TOKEN_FAILURE_WINDOW seconds gets 429 (with
# Retry-After) for every further refused token until the window ends. Valid tokens are never
# counted nor slowed. Counters live in Redis. 0: no limit.
DEBUSINE_TOKEN_FAILURE_LIMIT = 20

# Seconds over which refused tokens are counted (see DEBUSINE_TOKEN_FAILURE_LIMIT).
DEBUSINE_TOKEN_FAILURE_WINDOW = 300

# --- Work requests ----------------------------------------------------------------------

# Page size of `GET /api/1.0/work-request/`.
DEBUSINE_WORK_REQUEST_PAGE_SIZE = 10

# --- Workers and scheduling -----------------------------------------------------------

# Seconds a worker may stay out of touch (websocket closed and no API call) before its lease
# on its running work requests expires: they are then retried on another worker (at most 3
# automatic retries) and its assigned pending ones go back to the queue.
DEBUSINE_WORKER_LEASE_GRACE = 60

# Seconds between the scheduler's periodic fallback passes (Celery beat). Passes also run
# whenever a work request is created or completed and a worker connects or reports metadata;
# the fallback re-sends notifications that were lost (for instance when Redis restarted).
DEBUSINE_SCHEDULER_FALLBACK_INTERVAL = 30

# Seconds between provisioner passes (Celery beat sends them to the `provisioner` queue;
# `debusine-admin provisioner run` uses it as its default interval). A pass scales the dynamic
# worker pools; passes never overlap (a PostgreSQL advisory lock).
DEBUSINE_PROVISIONER_INTERVAL = 60

# Whether a change that may let work start (a work request created, a worker connected...)
# runs a scheduling pass at once in the process that made it, when no other pass is running;
# otherwise (or when this is off) the scheduler process runs one. Passes never overlap either
# way (a PostgreSQL advisory lock). On: a few milliseconds less between creation and dispatch.
DEBUSINE_SCHEDULER_PASS_IN_PROCESS = True

# Seconds between the server's requests for a connected worker's dynamic metadata.
DEBUSINE_DYNAMIC_METADATA_INTERVAL = 3600

# Seconds between the end of the answer to a worker's completion report and the
# `work_request_available` telling it about the next work request it was given meanwhile.
# Debusine's own workers (0.11 to 0.16) only take new work once they have processed that
# answer, and wait a whole second when told earlier; ours ask for more at once and ignore it.
DEBUSINE_WORKER_NOTIFY_AFTER_COMPLETION = 0.02

# --- Monitoring -------------------------------------------------------------------------

# Token that `GET /api/1.0/open-metrics/` requires as `Authorization: Bearer <token>` (what
# Prometheus's `authorization` / `bearer_token` sends). Empty: the metrics are open to anyone,
# like `service-status`.
DEBUSINE_METRICS_TOKEN = ""

# --- Logging ----------------------------------------------------------------------------

# Log level of the `debusine` loggers.
DEBUSINE_LOG_LEVEL = "INFO"
