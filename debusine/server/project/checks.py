"""
System checks for a Debusine instance, run by `debusine-admin check` (and `check --deploy`).

Each problem is reported in one line with a hint, never as a traceback:

- debusine.E001: the database cannot be reached;
- debusine.E002 (`--deploy` only, like Django's own security checks): the insecure development
  secret key is in use while DEBUG is off;
- debusine.E003 / E004: the local store / upload directory is not writable, or cannot be
  created;
- debusine.E005: migrations are not applied. `migrate` itself passes its database to the
  checks and skips this one: it is about to apply them.
- debusine.W002: a read replica of DEBUSINE_DATABASE_REPLICA_URLS does not answer, does not
  stream from the primary, or lags beyond DEBUSINE_DATABASE_REPLICA_MAX_LAG;
- debusine.E009: DEBUSINE_MULTI_SERVER is on and a scope uses a Local or Memory store (the
  server refuses to start then too; see `multi_server`).

`--deploy` only (tag `deploy`, with Django's own security checks), about an insecure
configuration:

- debusine.E006: DEBUG is on;
- debusine.E007: a file holding a secret (the secret key, database or Redis URL files of the
  data directory, the settings file) can be read or written by any user of the machine;
- debusine.E008: a secret key that is empty or shorter than 32 characters;
- debusine.W001: the database, Redis or an S3 file store is reached over the network without
  TLS (a host that is not loopback, and no `sslmode=require` / `rediss://` / `https://`).
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from debusine.server.db.errors import first_line
from debusine.server.project import instance


def database_error() -> str | None:
    """Why the default database cannot be reached, or None if it can."""
    try:
        connections[DEFAULT_DB_ALIAS].ensure_connection()
    except DatabaseError as exc:
        return first_line(exc)
    return None


@register("debusine")
def check_database_reachable(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """debusine.E001: the database answers."""
    problem = database_error()
    if problem is None:
        return []
    url = instance.redact_url(settings.DEBUSINE_DATABASE_URL)
    return [
        Error(
            f"Cannot connect to the database {url}: {problem}",
            hint="Start PostgreSQL (`make run` does), or fix DEBUSINE_DATABASE_URL.",
            id="debusine.E001",
        )
    ]


@register(Tags.security, deploy=True)
def check_secret_key(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """debusine.E002: a real secret key outside development mode."""
    if settings.DEBUG or settings.SECRET_KEY != settings.INSECURE_SECRET_KEY:
        return []
    key_file = settings.DEBUSINE_DATA_DIR / instance.SECRET_KEY_FILE
    return [
        Error(
            "The insecure development secret key is in use and DEBUG is off.",
            hint=f"Set DEBUSINE_SECRET_KEY, or write a random key to {key_file} (mode 0600).",
            id="debusine.E002",
        )
    ]


def directory_problem(directory: Path) -> str | None:
    """
    Why files cannot be written in `directory` (or it cannot be created), or None.

    Writes and removes a temporary file rather than trusting permission bits: they say
    nothing for root, nor for read-only filesystems. A missing directory is fine when the
    closest existing parent accepts a new directory; nothing is created.
    """
    if directory.is_dir():
        try:
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            return f"cannot write in it: {exc.strerror or exc}"
        return None
    if directory.exists():
        return "it exists and is not a directory"
    parent = directory.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"it cannot be created: {parent} is not a directory"
    try:
        with tempfile.TemporaryDirectory(dir=parent):
            pass
    except OSError as exc:
        return f"it cannot be created in {parent}: {exc.strerror or exc}"
    return None


@register("debusine")
def check_directories_writable(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """debusine.E003 / E004: the store and upload directories accept files."""
    messages: list[CheckMessage] = []
    for setting, check_id in (
        ("DEBUSINE_STORE_DIRECTORY", "debusine.E003"),
        ("DEBUSINE_UPLOAD_DIRECTORY", "debusine.E004"),
    ):
        directory = Path(getattr(settings, setting))
        problem = directory_problem(directory)
        if problem is not None:
            messages.append(
                Error(
                    f"{setting} {directory} is not usable: {problem}.",
                    hint="Fix its ownership or permissions, or point the setting elsewhere.",
                    id=check_id,
                )
            )
    return messages


@register("debusine")
def check_migrations_applied(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """debusine.E005: every migration is applied (skipped under `migrate`, see above)."""
    if databases is not None or database_error() is not None:
        # `migrate` passes its database; an unreachable database is E001's business.
        return []
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if not plan:
        return []
    names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in plan[:5])
    more = f" and {len(plan) - 5} more" if len(plan) > 5 else ""
    return [
        Error(
            f"{len(plan)} migration(s) not applied: {names}{more}.",
            hint="Run `debusine-admin migrate`.",
            id="debusine.E005",
        )
    ]


@register("debusine")
def check_multi_server_stores(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """debusine.E009: one of several servers, with scopes using stores of one machine."""
    if not settings.DEBUSINE_MULTI_SERVER or databases is not None:
        return []
    from debusine.server.project.multi_server import local_stores_in_use, refusal

    try:
        stores = local_stores_in_use(settings.DEBUSINE_DATABASE_URL)
    except Exception:
        return []
    if not stores:
        return []
    return [
        Error(
            refusal(stores),
            hint='See docs/howto/deploy-server.md, "Several servers".',
            id="debusine.E009",
        )
    ]


@register("debusine")
def check_replicas_fit(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """debusine.W002: a configured read replica is not used (down, not streaming, lagging)."""
    if databases is not None:
        return []
    from debusine.server.replicas import replica_status

    urls: list[str] = settings.DEBUSINE_DATABASE_REPLICA_URLS
    return [
        Warning(
            f"Read replica {alias} ({instance.redact_url(url)}) is not used: {health.reason}.",
            hint="Requests read from the primary meanwhile; see docs/howto/deploy-server.md,"
            ' "Read replicas".',
            id="debusine.W002",
        )
        for (alias, health), url in zip(replica_status().items(), urls, strict=True)
        if not health.fit
    ]


# --- check --deploy: an insecure configuration ------------------------------------------------

#: The shortest secret key accepted in production (Django's own check wants 50 characters
#: with some variety; ours only refuses what is plainly guessable).
MIN_SECRET_KEY_LENGTH = 32


@register(Tags.security, deploy=True)
def check_debug_off(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """debusine.E006: DEBUG shows stack traces and settings to anyone who triggers an error."""
    if not settings.DEBUG:
        return []
    return [
        Error(
            "DEBUG is on: error pages show code, settings and request data to any client.",
            hint="Unset DEBUSINE_DEBUG (and `DEBUG` in the settings file).",
            id="debusine.E006",
        )
    ]


@register(Tags.security, deploy=True)
def check_secret_key_strength(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """debusine.E008: a secret key nobody can guess (the development key is E002's)."""
    key: str = settings.SECRET_KEY or ""
    if key == settings.INSECURE_SECRET_KEY or len(key) >= MIN_SECRET_KEY_LENGTH:
        return []
    return [
        Error(
            f"The secret key has {len(key)} characters: at least {MIN_SECRET_KEY_LENGTH} "
            "random ones are needed.",
            hint="Set DEBUSINE_SECRET_KEY to a long random string (or remove it and let "
            "`debusine-admin` use the key file of the data directory).",
            id="debusine.E008",
        )
    ]


def secret_files() -> list[Path]:
    """The files that hold secrets: the data directory's key and URL files, the settings."""
    from debusine.server.project.settings_loader import DEFAULT_SETTINGS_FILE

    data_dir = Path(settings.DEBUSINE_DATA_DIR)
    settings_file = Path(os.environ.get("DEBUSINE_SETTINGS_FILE", str(DEFAULT_SETTINGS_FILE)))
    return [
        data_dir / instance.SECRET_KEY_FILE,
        data_dir / instance.DATABASE_URL_FILE,
        data_dir / instance.REDIS_URL_FILE,
        settings_file,
    ]


@register(Tags.security, deploy=True)
def check_secret_file_permissions(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """debusine.E007: no secret is readable (or writable) by every user of the machine."""
    messages: list[CheckMessage] = []
    for path in secret_files():
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # absent: nothing to protect
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            messages.append(
                Error(
                    f"{path} holds secrets and any user of this machine can "
                    f"{'read' if mode & stat.S_IROTH else 'write'} it "
                    f"(mode {stat.S_IMODE(mode):04o}).",
                    hint=f"chmod o-rwx {path}",
                    id="debusine.E007",
                )
            )
    return messages


def is_loopback(host: str) -> bool:
    """Whether `host` (a name, an address, or a Unix socket path) never leaves the machine."""
    if not host or host.startswith("/") or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plaintext_network_urls() -> list[tuple[str, str]]:
    """(what, redacted URL) of each configured service reached over the network without TLS."""
    found: list[tuple[str, str]] = []
    database = instance.parse_database_url(settings.DEBUSINE_DATABASE_URL)
    if not is_loopback(database.host) and database.options.get("sslmode") not in (
        "require",
        "verify-ca",
        "verify-full",
    ):
        found.append(("The database", instance.redact_url(settings.DEBUSINE_DATABASE_URL)))
    redis_url = urlsplit(settings.DEBUSINE_REDIS_URL)
    if redis_url.scheme == "redis" and not is_loopback(redis_url.hostname or ""):
        found.append(("Redis", instance.redact_url(settings.DEBUSINE_REDIS_URL)))
    found.extend(plaintext_s3_endpoints())
    return found


def plaintext_s3_endpoints() -> list[tuple[str, str]]:
    """(what, endpoint) of each S3 file store with an http:// endpoint off this machine."""
    if database_error() is not None:
        return []  # E001 says so
    from debusine.server.db.models import FileStore
    from debusine.server.db.models.file_stores import FileStoreBackend

    found: list[tuple[str, str]] = []
    try:
        stores = list(
            FileStore.objects.filter(backend=FileStoreBackend.S3).values_list(
                "name", "configuration"
            )
        )
    except DatabaseError:
        return []  # not migrated yet: E005 says so
    for name, configuration in stores:
        endpoint = str((configuration or {}).get("endpoint_url") or "")
        parts = urlsplit(endpoint)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            found.append((f"S3 file store {name}", endpoint))
    return found


@register(Tags.security, deploy=True)
def check_tls_to_services(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """debusine.W001: credentials and data cross the network only over TLS."""
    return [
        Warning(
            f"{what} is reached over the network without TLS: {url}",
            hint="Use sslmode=require (PostgreSQL), rediss:// (Redis) or an https:// "
            "endpoint (S3), or a loopback address or Unix socket.",
            id="debusine.W001",
        )
        for what, url in plaintext_network_urls()
    ]
