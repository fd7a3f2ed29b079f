"""
Django settings: the documented defaults, their overrides, then settings derived from them.

Operators change only what `defaults.py` declares; everything below is computed from those
values and is not meant to be overridden.
"""

from __future__ import annotations

import os
from typing import Any

from debusine.server.project import forwarded, instance
from debusine.server.project.settings.defaults import *  # noqa: F403
from debusine.server.project.settings_loader import declared_settings
from debusine.server.replicas import replica_aliases

globals().update(declared_settings())

INSECURE_SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

DEBUSINE_DATA_DIR = instance.resolve_data_dir(globals()["DEBUSINE_DATA_DIR"])
DEBUSINE_STORE_DIRECTORY = instance.resolve_directory(
    globals()["DEBUSINE_STORE_DIRECTORY"], DEBUSINE_DATA_DIR / "store"
)
DEBUSINE_UPLOAD_DIRECTORY = instance.resolve_directory(
    globals()["DEBUSINE_UPLOAD_DIRECTORY"], DEBUSINE_DATA_DIR / "uploads"
)

SECRET_KEY: str = (
    globals()["DEBUSINE_SECRET_KEY"]
    or instance.read_recorded(DEBUSINE_DATA_DIR, instance.SECRET_KEY_FILE)
    or INSECURE_SECRET_KEY
)

DEBUSINE_DATABASE_URL = instance.resolve_url(
    globals()["DEBUSINE_DATABASE_URL"],
    DEBUSINE_DATA_DIR,
    instance.DATABASE_URL_FILE,
    instance.DEFAULT_DATABASE_URL,
)
DEBUSINE_REDIS_URL = instance.resolve_url(
    globals()["DEBUSINE_REDIS_URL"],
    DEBUSINE_DATA_DIR,
    instance.REDIS_URL_FILE,
    instance.DEFAULT_REDIS_URL,
)

_db = instance.parse_database_url(DEBUSINE_DATABASE_URL)
# Only server processes pool connections (asgi.py marks them): a command or a test needs one
# connection and should fail at once, not after a pool timeout, when the database is down.
_pool_size: int = globals()["DEBUSINE_DATABASE_POOL_SIZE"]
_pool_options: dict[str, Any] = (
    {"pool": {"min_size": 1, "max_size": _pool_size, "timeout": 30}}
    if _pool_size > 0 and os.environ.get(instance.SERVING_ASGI_VARIABLE) == "1"
    else {}
)
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.name,
        "USER": _db.user,
        "PASSWORD": _db.password,
        "HOST": _db.host,
        "PORT": _db.port,
        "OPTIONS": {**_db.options, **_pool_options},
        # Every request is one transaction: bad input changes nothing.
        "ATOMIC_REQUESTS": True,
        # Under ASGI every request runs its database code in a thread of its own: connections
        # kept per thread (CONN_MAX_AGE > 0) would pile up until PostgreSQL refuses clients.
        # Requests borrow from the process's pool instead, and return the connection at the end.
        "CONN_MAX_AGE": 0,
        "TEST": {"NAME": f"test_{_db.name}"},
    }
}

# Read replicas (debusine.server.replicas): the same database, read by eligible requests.
for _alias, _replica_url in zip(
    replica_aliases(globals()["DEBUSINE_DATABASE_REPLICA_URLS"]),
    globals()["DEBUSINE_DATABASE_REPLICA_URLS"],
    strict=True,
):
    _replica = instance.parse_database_url(_replica_url)
    # With CONN_HEALTH_CHECKS, Django's pool checks each connection it lends: one to a replica
    # that restarted is replaced at once. A short timeout: a replica that went away costs a
    # request a second at most, then the primary answers.
    _replica_pool: dict[str, Any] = (
        {"pool": {**_pool_options["pool"], "timeout": 1}} if _pool_options else {}
    )
    DATABASES[_alias] = {
        **DATABASES["default"],
        "NAME": _replica.name,
        "USER": _replica.user,
        "PASSWORD": _replica.password,
        "HOST": _replica.host,
        "PORT": _replica.port,
        "OPTIONS": {"connect_timeout": 2, **_replica.options, **_replica_pool},
        # Reads only, query by query: a transaction per request on every replica would make
        # each request (whatever it reads from) depend on every replica being up.
        "ATOMIC_REQUESTS": False,
        # The pool checks each connection before lending it (see above).
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"MIRROR": "default"},
    }
DATABASE_ROUTERS = ["debusine.server.replicas.ReplicaRouter"]

if not globals()["ALLOWED_HOSTS"]:
    ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", globals()["DEBUSINE_FQDN"]]

if globals()["DEBUSINE_TRUST_X_FORWARDED_PROTO"]:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_celery_results",
    "debusine.server.db",
    "debusine.server",
    "debusine.server.web",
]

# Refuse a bad DEBUSINE_TRUSTED_PROXIES at start-up rather than on the first request.
forwarded.TrustedProxies.parse(globals()["DEBUSINE_TRUSTED_PROXIES"])

MIDDLEWARE = [
    # Before anything reads the client address or the scheme: forwarded headers count only
    # from DEBUSINE_TRUSTED_PROXIES.
    "debusine.server.project.forwarded.ForwardedHeadersMiddleware",
    # First: request latency of every request, whatever answers it.
    "debusine.server.metrics.middleware.RequestLatencyMiddleware",
    # Next: it sees (and turns into problems) the errors of every other middleware.
    "debusine.server.api.errors.ProblemMiddleware",
    # Before anything reads the database: where this request reads (primary or a replica).
    "debusine.server.replicas.ReplicaMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "debusine.server.api.middleware.ScopeMiddleware",
]

ROOT_URLCONF = "debusine.server.project.urls"
# Problem+json under /api/, Django's page elsewhere (debusine.server.api.errors).
CSRF_FAILURE_VIEW = "debusine.server.api.errors.csrf_failure"
ASGI_APPLICATION = "debusine.server.project.asgi.application"
AUTH_USER_MODEL = "db.User"
# The web UI's sign-in page, and where signing in leads without `?next=`.
LOGIN_URL = "/-/signin/"
LOGIN_REDIRECT_URL = "/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "/static/"
STATIC_ROOT = DEBUSINE_DATA_DIR / "static"

# JSON bodies larger than this are refused (413). Upload chunks (raw bytes, read by the upload
# view from the request stream) are not subject to it: DEBUSINE_MAX_UPLOAD_CHUNK_SIZE is theirs.
DATA_UPLOAD_MAX_MEMORY_SIZE: int = globals()["DEBUSINE_MAX_REQUEST_BODY_SIZE"]
# Under ASGI Django spools each request body to a temporary file above this size, so a 50 MiB
# upload chunk never sits in memory. (0 would mean "never spill", not "always spill".)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "debusine.server.api.auth.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSON parser plus 400s for what PostgreSQL would refuse (NUL, deep nesting).
    "DEFAULT_PARSER_CLASSES": ["debusine.server.api.json_parser.StorableJSONParser"],
    "EXCEPTION_HANDLER": "debusine.server.api.errors.problem_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# --- Redis: Celery broker and Channels layer -----------------------------------------------

DEBUSINE_REDIS_KEY_PREFIX = instance.resolve_redis_key_prefix(
    globals()["DEBUSINE_REDIS_KEY_PREFIX"], DEBUSINE_DATA_DIR
)
_redis_prefix = DEBUSINE_REDIS_KEY_PREFIX

CELERY_BROKER_URL = instance.kombu_redis_url(DEBUSINE_REDIS_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{_redis_prefix}:celery:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = "django-db"
# Our jobs return nothing anyone reads: storing results would cost a write per job.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ROUTES = {
    "debusine.scheduler.*": {"queue": "scheduler"},
    "debusine.workflows.*": {"queue": "workflows"},
    "debusine.provisioner.*": {"queue": "provisioner"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(DEBUSINE_DATA_DIR / "celerybeat-schedule")

CHANNEL_LAYERS = {
    "default": {
        # Pub/sub: a group message is one PUBLISH that reaches the subscribed server processes
        # at once; nothing is queued for consumers that are gone.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [DEBUSINE_REDIS_URL], "prefix": f"{_redis_prefix}:channels:"},
    }
}

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        # Not propagated: under Celery the root logger has a handler of its own, and every
        # line would be written twice.
        "debusine": {
            "handlers": ["console"],
            "level": globals()["DEBUSINE_LOG_LEVEL"],
            "propagate": False,
        },
        # Unhandled exceptions (500s) with their tracebacks: an operator must see them.
        "django": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        # A body over the limit is the client's mistake, answered with a 413 problem that says
        # so: not an error with a traceback in the server's log.
        "django.security.RequestDataTooBig": {
            "handlers": ["console"],
            "level": "CRITICAL",
            "propagate": False,
        },
    },
}

# Tests and tools may point at another settings module; keep this one importable without side
# effects (no connection, no file written).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")
