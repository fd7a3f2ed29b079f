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
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
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
