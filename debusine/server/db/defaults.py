"""
Rows every instance has: the `_system` user, the default scope and workspace, the `Default` store.

Created after every `migrate` (and after a test database flush, which runs the same signal),
idempotently: an operator who renamed nothing loses nothing, and nothing is duplicated.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

#: The internal user that acts for the server itself (and for admin commands by default).
SYSTEM_USERNAME = "_system"


def ensure_default_rows(using: str = DEFAULT_DB_ALIAS) -> None:
    """Create the default rows that are missing."""
    from debusine.server.db.models import (
        FileStore,
        FileStoreBackend,
        FileStoreInScope,
        Scope,
        User,
        Workspace,
    )

    User.objects.db_manager(using).get_or_create(
        username=SYSTEM_USERNAME,
        defaults={"is_system": True, "first_name": "Debusine", "last_name": "System"},
    )
    scope, _ = Scope.objects.using(using).get_or_create(
        name=settings.DEBUSINE_DEFAULT_SCOPE, defaults={"label": "Debusine"}
    )
    Workspace.objects.using(using).get_or_create(
        scope=scope, name=settings.DEBUSINE_DEFAULT_WORKSPACE, defaults={"public": True}
    )
    store, _ = FileStore.objects.using(using).get_or_create(
        name=FileStore.DEFAULT_NAME,
        defaults={"backend": FileStoreBackend.LOCAL, "configuration": {}},
    )
    FileStoreInScope.objects.using(using).get_or_create(scope=scope, file_store=store)


def create_default_rows_after_migrate(using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """`post_migrate` receiver: only once the `db` app's tables all exist."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[using])
    targets = [key for key in executor.loader.graph.leaf_nodes() if key[0] == "db"]
    if executor.migration_plan(targets):
        return  # migrating `db` backwards or partially: its tables may not match the models
    ensure_default_rows(using)
