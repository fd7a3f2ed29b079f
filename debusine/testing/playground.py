"""
Test data for server tests: a `Playground` of factories, and the scenario most tests start from.

Tests create what they need through these factories instead of building rows by hand, so a
model change is mended in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from debusine.server.db.models import (
    Artifact,
    File,
    FileInArtifact,
    FileStore,
    FileStoreInScope,
    Group,
    Scope,
    TaskType,
    Token,
    User,
    Worker,
    WorkerType,
    WorkRequest,
    Workspace,
    WorkspaceRoles,
)


@dataclass
class FileSpec:
    """Contents of a file to put into an artifact."""

    path: str
    contents: bytes

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.contents).digest()


class Playground:
    """Factories for server test data, all in the default scope unless told otherwise."""

    def __init__(self) -> None:
        self.scope = Scope.objects.get(name=settings.DEBUSINE_DEFAULT_SCOPE)
        self.workspace = Workspace.objects.get(
            scope=self.scope, name=settings.DEBUSINE_DEFAULT_WORKSPACE
        )
        #: Token keys of the workers made by `create_connected_worker`, by worker id.
        self.worker_keys: dict[int, str] = {}

    def create_user(self, username: str = "user", **fields: Any) -> User:
        return User.objects.create_user(
            username=username, email=f"{username}@example.org", **fields
        )

    def create_user_token(self, user: User, *, enabled: bool = True) -> str:
        """Create a token for `user` and return its key."""
        _, key = Token.objects.create_with_key(user=user, enabled=enabled)
        return key

    def create_group(
        self, name: str, users: list[User] | None = None, scope: Scope | None = None
    ) -> Group:
        group = Group.objects.create(name=name, scope=scope or self.scope)
        group.set_members(users or [])
        return group

    def grant(
        self, user: User, workspace: Workspace, role: str = WorkspaceRoles.CONTRIBUTOR
    ) -> Group:
        """Give `user` `role` on `workspace` through a group of its own."""
        group, _ = Group.objects.get_or_create(
            name=f"{user.username}-{workspace.name}-{role}", scope=workspace.scope
        )
        group.add_members([user])
        workspace.grant_role(group, role)
        return group

    def create_workspace(
        self, name: str, *, public: bool = False, scope: Scope | None = None
    ) -> Workspace:
        return Workspace.objects.create(scope=scope or self.scope, name=name, public=public)

    def create_worker(
        self,
        name: str = "worker",
        *,
        enabled: bool = True,
        worker_type: str = WorkerType.EXTERNAL,
    ) -> tuple[Worker, str]:
        """Create a worker with its token; return the worker and the token key."""
        token, key = Token.objects.create_with_key(enabled=enabled)
        worker = Worker.objects.create(name=name, worker_type=worker_type, token=token)
        return worker, key

    def create_connected_worker(
        self,
        name: str = "worker",
        *,
        metadata: dict[str, Any] | None = None,
        concurrency: int = 1,
        worker_type: str = WorkerType.EXTERNAL,
    ) -> Worker:
        """
        A worker as the scheduler sees one with an open websocket: enabled, connected, alive,
        reporting `metadata` (by default the version of every Worker task). Its token key is
        `self.worker_keys[worker.pk]`.
        """
        worker, key = self.create_worker(name, worker_type=worker_type)
        self.worker_keys[worker.pk] = key
        worker.dynamic_metadata = (
            {f"{task}:version": 1 for task in ("noop", "sleep")} if metadata is None else metadata
        )
        worker.concurrency = concurrency
        worker.connected_at = timezone.now()
        worker.save()
        worker.renew_lease()
        return worker

    def create_work_request(
        self,
        *,
        created_by: User,
        task_name: str = "noop",
        task_data: dict[str, Any] | None = None,
        workspace: Workspace | None = None,
        task_type: str = TaskType.WORKER,
        **fields: Any,
    ) -> WorkRequest:
        return WorkRequest.objects.create(
            workspace=workspace or self.workspace,
            created_by=created_by,
            task_name=task_name,
            task_type=task_type,
            task_data={"result": True} if task_data is None else task_data,
            **fields,
        )

    def create_artifact(
        self,
        *,
        category: str = "debusine:test",
        workspace: Workspace | None = None,
        files: list[FileSpec] | None = None,
        complete: bool = False,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Artifact:
        """
        Create an artifact and its file rows.

        With `complete=False` the files still need uploading; with `complete=True` they are
        only marked complete: put contents in a store through the file store API when a test
        downloads them.
        """
        artifact = Artifact.objects.create(
            category=category, workspace=workspace or self.workspace, data=data or {}, **fields
        )
        for spec in files or []:
            file = File.objects.get_or_create_by_hash(spec.sha256, len(spec.contents))
            FileInArtifact.objects.create(
                artifact=artifact, path=spec.path, file=file, complete=complete
            )
        return artifact

    def create_file_store(
        self,
        name: str,
        *,
        backend: str = "Memory",
        configuration: dict[str, Any] | None = None,
        scope: Scope | None = None,
        max_size: int | None = None,
        **policies: Any,
    ) -> FileStore:
        """Create a file store used by `scope` with the given FileStoreInScope policies."""
        store = FileStore.objects.create(
            name=name, backend=backend, configuration=configuration or {}, max_size=max_size
        )
        FileStoreInScope.objects.create(scope=scope or self.scope, file_store=store, **policies)
        return store

    def store_contents(self, contents: bytes, store: FileStore | None = None) -> File:
        """Put `contents` in `store` (default: the `Default` local store) and return its File."""
        import tempfile
        from pathlib import Path

        from debusine.server.file_stores import get_backend

        store = store or FileStore.objects.get(name=FileStore.DEFAULT_NAME)
        file = File.objects.get_or_create_by_hash(hashlib.sha256(contents).digest(), len(contents))
        with tempfile.TemporaryDirectory() as directory:
            source = Path(directory, "contents")
            source.write_bytes(contents)
            get_backend(store).add_file(file, source, move=True)
        return file


def api_client(token: str | None = None, *, scope: str | None = None) -> APIClient:
    """A DRF test client sending `Token` (and `X-Debusine-Scope` when given)."""
    client = APIClient()
    headers: dict[str, str] = {}
    if token is not None:
        headers["HTTP_TOKEN"] = token
    if scope is not None:
        headers["HTTP_X_DEBUSINE_SCOPE"] = scope
    client.credentials(**headers)
    return client
