"""Tests of `debusine-admin instance delete_expired`: every retention rule, what it frees."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from debusine.server.db.models import (
    Artifact,
    ArtifactRelation,
    Collection,
    CollectionItem,
    CollectionRetention,
    File,
    FileInStore,
    FileStore,
    User,
    WorkRequest,
    WorkRequestStatus,
)
from debusine.server.file_stores import get_backend
from debusine.testing.playground import FileSpec, Playground

DAY = timedelta(days=1)
CaptureCallbacks = Callable[..., AbstractContextManager[Any]]
Expire = Callable[..., str]


@pytest.fixture(autouse=True)
def directories(file_directories: Path) -> Path:
    return file_directories


@pytest.fixture
def delete_expired(django_capture_on_commit_callbacks: CaptureCallbacks) -> Expire:
    """Run `instance delete_expired` and its on-commit callbacks; return stdout."""

    def run(*args: str) -> str:
        stdout = io.StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("instance", "delete_expired", *args, stdout=stdout, stderr=io.StringIO())
        return stdout.getvalue()

    return run


@pytest.fixture
def owner(playground: Playground) -> User:
    return playground.create_user("owner")


def old_request(playground: Playground, owner: User, age: timedelta, **fields: Any) -> WorkRequest:
    return playground.create_work_request(
        created_by=owner, created_at=timezone.now() - age, **fields
    )


def old_artifact(
    playground: Playground, age: timedelta, contents: bytes | None = None, **fields: Any
) -> Artifact:
    files = [FileSpec("f.bin", contents)] if contents is not None else []
    artifact = playground.create_artifact(
        files=files, complete=True, created_at=timezone.now() - age, **fields
    )
    if contents is not None:
        playground.store_contents(contents)
    return artifact


def exists(instance: Any) -> bool:
    return bool(type(instance).objects.filter(pk=instance.pk).exists())


def collection(
    playground: Playground, retains: str, category: str = "debusine:test"
) -> Collection:
    return Collection.objects.create(
        name="c" if category != "debusine:workflow-internal" else "_",
        category=category,
        workspace=playground.workspace,
        retains_artifacts=retains,
    )


def add_item(
    target: Collection, artifact: Artifact | None = None, **fields: Any
) -> CollectionItem:
    return CollectionItem.objects.create(
        name=fields.pop("name", f"item-{CollectionItem.objects.count()}"),
        child_type="a" if artifact is not None else "b",
        category="debusine:test",
        parent_collection=target,
        parent_category=target.category,
        artifact=artifact,
        **fields,
    )


def test_work_requests_expire_by_their_delay_or_the_workspace_default(
    playground: Playground, owner: User, delete_expired: Expire
) -> None:
    workspace = playground.workspace
    workspace.default_expiration_delay = 10 * DAY
    workspace.save()
    own_delay = old_request(playground, owner, 3 * DAY, expiration_delay=2 * DAY)
    default_delay = old_request(playground, owner, 11 * DAY)
    young = old_request(playground, owner, 9 * DAY)
    forever = old_request(playground, owner, 100 * DAY, expiration_delay=timedelta(0))

    out = delete_expired()

    assert not exists(own_delay) and not exists(default_delay)
    assert exists(young) and exists(forever)
    assert f"Deleted work request {own_delay.pk}\n" in out


def test_workflows_go_with_all_their_children_only(
    playground: Playground, owner: User, delete_expired: Expire
) -> None:
    internal = collection(playground, CollectionRetention.WORKFLOW, "debusine:workflow-internal")
    done = old_request(
        playground, owner, 5 * DAY, expiration_delay=DAY, internal_collection=internal
    )
    child = old_request(playground, owner, 5 * DAY, expiration_delay=DAY, parent=done)
    add_item(internal, name="promise", created_by_workflow=done)
    busy = old_request(playground, owner, 5 * DAY, expiration_delay=DAY)
    young_child = old_request(playground, owner, 0 * DAY, expiration_delay=DAY, parent=busy)

    out = delete_expired()

    assert not exists(done) and not exists(child) and not exists(internal)
    assert f"Deleted work request {done.pk} and 1 descendant(s)" in out
    assert exists(busy) and exists(young_child)


def test_work_requests_that_changed_a_collection_stay(
    playground: Playground, owner: User, delete_expired: Expire
) -> None:
    suite = collection(playground, CollectionRetention.ALWAYS)
    author = old_request(playground, owner, 5 * DAY, expiration_delay=DAY)
    remover = old_request(playground, owner, 5 * DAY, expiration_delay=DAY)
    add_item(suite, created_by_workflow=author)
    add_item(suite, removed_by_workflow=remover, removed_at=timezone.now())

    delete_expired()

    assert exists(author) and exists(remover)


def test_expired_artifacts_go_and_their_files_leave_every_store(
    playground: Playground, delete_expired: Expire
) -> None:
    extra = playground.create_file_store("extra")
    expired = old_artifact(playground, 3 * DAY, b"expired", expiration_delay=DAY)
    file = File.objects.get(fileinartifact__artifact=expired)
    playground.store_contents(b"expired", extra)
    shared = old_artifact(playground, 3 * DAY, b"shared", expiration_delay=DAY)
    keeper = old_artifact(playground, 0 * DAY, b"shared", expiration_delay=DAY)
    unexpired = old_artifact(playground, 3 * DAY, b"young", expiration_delay=5 * DAY)

    out = delete_expired()

    assert not exists(expired) and not exists(shared)
    assert exists(keeper) and exists(unexpired)
    assert not File.objects.filter(pk=file.pk).exists()
    assert not get_backend(extra).has_contents(file)
    assert not get_backend(FileStore.objects.get(name="Default")).has_contents(file)
    assert f"Removed file {file} from Default, extra" in out
    # Contents another artifact still uses stay.
    assert FileInStore.objects.filter(file__fileinartifact__artifact=keeper).exists()


def test_collections_that_retain_artifacts_keep_them(
    playground: Playground, owner: User, delete_expired: Expire
) -> None:
    always = collection(playground, CollectionRetention.ALWAYS)
    in_suite = old_artifact(playground, 3 * DAY, expiration_delay=DAY)
    add_item(always, in_suite)
    running_internal = Collection.objects.create(
        name="_",
        category="debusine:workflow-internal",
        workspace=playground.workspace,
        retains_artifacts=CollectionRetention.WORKFLOW,
    )
    old_request(
        playground,
        owner,
        0 * DAY,
        internal_collection=running_internal,
        status=WorkRequestStatus.RUNNING,
    )
    in_running = old_artifact(playground, 3 * DAY, expiration_delay=DAY)
    add_item(running_internal, in_running)
    never = Collection.objects.create(
        name="scratch",
        category="debusine:test",
        workspace=playground.workspace,
        retains_artifacts=CollectionRetention.NEVER,
    )
    in_scratch = old_artifact(playground, 3 * DAY, expiration_delay=DAY)
    scratch_item = add_item(never, in_scratch)

    delete_expired()

    assert exists(in_suite) and exists(in_running)
    assert not exists(in_scratch)
    scratch_item.refresh_from_db()
    assert scratch_item.artifact is None and scratch_item.removed_at is not None


def test_workflow_retention_ends_with_the_workflow(
    playground: Playground, owner: User, delete_expired: Expire
) -> None:
    internal = Collection.objects.create(
        name="_",
        category="debusine:workflow-internal",
        workspace=playground.workspace,
        retains_artifacts=CollectionRetention.WORKFLOW,
    )
    old_request(
        playground,
        owner,
        0 * DAY,
        internal_collection=internal,
        status=WorkRequestStatus.COMPLETED,
        result="success",
    )
    artifact = old_artifact(playground, 3 * DAY, expiration_delay=DAY)
    add_item(internal, artifact)

    delete_expired()

    assert not exists(artifact)


def test_relations_from_kept_artifacts_keep_their_targets(
    playground: Playground, delete_expired: Expire
) -> None:
    kept = old_artifact(playground, 0 * DAY, expiration_delay=DAY)
    target = old_artifact(playground, 3 * DAY, expiration_delay=DAY)
    target_of_target = old_artifact(playground, 3 * DAY, expiration_delay=DAY)
    source_only = old_artifact(playground, 3 * DAY, expiration_delay=DAY)
    ArtifactRelation.objects.create(artifact=kept, target=target, type="relates-to")
    ArtifactRelation.objects.create(artifact=target, target=target_of_target, type="extends")
    ArtifactRelation.objects.create(artifact=source_only, target=kept, type="relates-to")

    delete_expired()

    assert exists(kept) and exists(target) and exists(target_of_target)
    assert not exists(source_only)


def test_collection_history_is_trimmed(playground: Playground, delete_expired: Expire) -> None:
    suite = Collection.objects.create(
        name="suite",
        category="debusine:test",
        workspace=playground.workspace,
        full_history_retention_period=2 * DAY,
        metadata_only_retention_period=3 * DAY,
    )
    forever = Collection.objects.create(
        name="forever", category="debusine:test", workspace=playground.workspace
    )
    now = timezone.now()
    recent = add_item(suite, old_artifact(playground, 0 * DAY), removed_at=now - DAY)
    metadata_only = add_item(suite, old_artifact(playground, 0 * DAY), removed_at=now - 3 * DAY)
    gone = add_item(suite, old_artifact(playground, 0 * DAY), removed_at=now - 6 * DAY)
    kept = add_item(forever, old_artifact(playground, 0 * DAY), removed_at=now - 60 * DAY)

    delete_expired()

    recent.refresh_from_db()
    metadata_only.refresh_from_db()
    kept.refresh_from_db()
    assert recent.artifact is not None and kept.artifact is not None
    assert metadata_only.artifact is None
    assert not exists(gone)


def test_dry_run_deletes_nothing(
    playground: Playground, owner: User, delete_expired: Expire
) -> None:
    request = old_request(playground, owner, 3 * DAY, expiration_delay=DAY)
    artifact = old_artifact(playground, 3 * DAY, b"dry", expiration_delay=DAY)

    out = delete_expired("--dry-run")

    assert f"Would have: Deleted work request {request.pk}" in out
    assert f"Would have: Deleted artifact {artifact.pk}" in out
    assert out.endswith("planned (dry run)\n")
    assert exists(request) and exists(artifact)
    assert get_backend(FileStore.objects.get(name="Default")).has_contents(
        File.objects.get(fileinartifact__artifact=artifact)
    )
