"""Tests of `debusine-admin file_store vacuum`: orphans, policies, size limits, reports."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from debusine.server.db.models import (
    Artifact,
    Collection,
    CollectionItem,
    File,
    FileInArtifact,
    FileInStore,
    FileStore,
    FileUpload,
    Scope,
)
from debusine.server.file_stores import get_backend
from debusine.server.file_stores.base import FileBackend, StoreEntry, entry_name
from debusine.testing.moto import MotoS3Server
from debusine.testing.playground import FileSpec, Playground

DAY = timedelta(days=1)
CaptureCallbacks = Callable[..., AbstractContextManager[Any]]


@pytest.fixture(autouse=True)
def directories(file_directories: Path) -> Path:
    return file_directories


Vacuum = Callable[..., tuple[int, str]]


@pytest.fixture
def vacuum(django_capture_on_commit_callbacks: CaptureCallbacks) -> Vacuum:
    """
    Run `file_store vacuum`; return its exit code and stdout.

    The test's transaction never commits: the on-commit callbacks (content deletions) run
    when the command returns, as they would when its own transactions commit.
    """

    def run(*args: str) -> tuple[int, str]:
        with django_capture_on_commit_callbacks(execute=True):
            return run_vacuum(*args)

    return run


def run_vacuum(*args: str) -> tuple[int, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command("file_store", "vacuum", *args, stdout=stdout, stderr=stderr)
    except CommandError as error:
        assert "\n" not in str(error)
        assert "vacuum_storage: policies..." in stderr.getvalue()
        return error.returncode, stdout.getvalue()
    assert "vacuum_storage: policies..." in stderr.getvalue()
    return 0, stdout.getvalue()


def stored_artifact(
    playground: Playground,
    contents: bytes,
    store: FileStore,
    *,
    age: timedelta = timedelta(0),
    path: str = "file.bin",
) -> File:
    """A complete artifact with one file, whose contents are in `store`."""
    playground.create_artifact(
        files=[FileSpec(path, contents)], complete=True, created_at=timezone.now() - age
    )
    return playground.store_contents(contents, store)


def stores_of(file: File) -> set[str]:
    return set(FileInStore.objects.filter(file=file).values_list("store__name", flat=True))


def make_old(path: Path) -> None:
    old = time.time() - 2 * DAY.total_seconds()
    os.utime(path, (old, old))


def test_nothing_to_do(playground: Playground, vacuum: Vacuum) -> None:
    assert vacuum() == (0, "0 action(s), 0 problem(s)\n")


def test_populate_copies_every_file_into_the_store(
    playground: Playground, moto_s3: MotoS3Server, vacuum: Vacuum
) -> None:
    default = FileStore.objects.get(name=FileStore.DEFAULT_NAME)
    backup = playground.create_file_store(
        "backup",
        backend="S3",
        configuration=moto_s3.store_configuration(moto_s3.new_bucket()),
        populate=True,
        write_only=True,
    )
    first = stored_artifact(playground, b"first", default)
    second = stored_artifact(playground, b"second", default)

    code, out = vacuum()

    assert code == 0, out
    assert f"Copied {first} from store Default to store backup" in out
    assert stores_of(first) == stores_of(second) == {"Default", "backup"}
    with get_backend(backup).open_contents(second) as reader:
        assert reader.read() == b"second"
    assert vacuum() == (0, "0 action(s), 0 problem(s)\n")


def test_drain_moves_files_where_uploads_go(playground: Playground, vacuum: Vacuum) -> None:
    old = playground.create_file_store("old", upload_priority=1, drain=True)
    playground.create_file_store("low", upload_priority=2)
    new = playground.create_file_store("new", upload_priority=5)
    file = stored_artifact(playground, b"drained", old)

    code, out = vacuum()

    assert code == 0, out
    assert stores_of(file) == {"new"}
    assert not get_backend(old).has_contents(file)
    with get_backend(new).open_contents(file) as reader:
        assert reader.read() == b"drained"


def test_drain_to_names_the_target(playground: Playground, vacuum: Vacuum) -> None:
    playground.create_file_store("archive", upload_priority=0)
    old = playground.create_file_store("old", drain=True, drain_to="archive")
    playground.create_file_store("fast", upload_priority=9)
    file = stored_artifact(playground, b"to the archive", old)

    assert vacuum()[0] == 0

    assert stores_of(file) == {"archive"}


def test_drain_just_removes_files_readable_elsewhere(
    playground: Playground, vacuum: Vacuum
) -> None:
    old = playground.create_file_store("old", drain=True)
    file = stored_artifact(playground, b"two copies", old)
    playground.store_contents(b"two copies")

    code, out = vacuum()

    assert code == 0
    assert "Copied" not in out
    assert stores_of(file) == {"Default"}


def test_drain_without_a_target_is_a_problem(playground: Playground, vacuum: Vacuum) -> None:
    scope = Scope.objects.create(name="lonely")
    workspace = playground.create_workspace(scope=scope, name="ws")
    only = playground.create_file_store("only", scope=scope, drain=True)
    playground.create_artifact(files=[FileSpec("f", b"stuck")], complete=True, workspace=workspace)
    file = playground.store_contents(b"stuck", only)

    code, out = vacuum()

    assert code == 1
    assert f"Problem: Scope lonely: no store can take {file} out of store only (drain)" in out
    assert stores_of(file) == {"only"}


def test_drain_never_targets_read_only_or_write_only_stores(
    playground: Playground, vacuum: Vacuum
) -> None:
    scope = Scope.objects.create(name="picky")
    workspace = playground.create_workspace(scope=scope, name="ws")
    old = playground.create_file_store("old", scope=scope, drain=True)
    playground.create_file_store("frozen", scope=scope, upload_priority=9, read_only=True)
    playground.create_file_store("backup", scope=scope, upload_priority=8, write_only=True)
    playground.create_artifact(files=[FileSpec("f", b"x")], complete=True, workspace=workspace)
    file = playground.store_contents(b"x", old)

    assert vacuum()[0] == 1
    assert stores_of(file) == {"old"}


def test_soft_limit_moves_the_least_recently_created_artifacts_first(
    playground: Playground, vacuum: Vacuum
) -> None:
    small = playground.create_file_store("small", upload_priority=10)
    FileStore.objects.filter(pk=small.pk).update(soft_max_size=250)
    oldest = stored_artifact(playground, b"a" * 100, small, age=3 * DAY)
    middle = stored_artifact(playground, b"b" * 100, small, age=2 * DAY)
    newest = stored_artifact(playground, b"c" * 100, small, age=DAY)

    code, out = vacuum()

    assert code == 0, out
    assert stores_of(oldest) == {"Default"}
    assert stores_of(middle) == stores_of(newest) == {"small"}
    assert FileStore.objects.get(pk=small.pk).total_size == 200


def test_scope_soft_limit_is_enforced(playground: Playground, vacuum: Vacuum) -> None:
    shared = playground.create_file_store("shared", upload_priority=10, soft_max_size=150)
    oldest = stored_artifact(playground, b"a" * 100, shared, age=2 * DAY)
    newest = stored_artifact(playground, b"b" * 100, shared, age=DAY)

    assert vacuum()[0] == 0

    assert stores_of(oldest) == {"Default"}
    assert stores_of(newest) == {"shared"}


def test_store_over_its_limit_with_nowhere_to_go_is_a_problem(
    playground: Playground, vacuum: Vacuum
) -> None:
    default = FileStore.objects.get(name=FileStore.DEFAULT_NAME)
    FileStore.objects.filter(pk=default.pk).update(soft_max_size=10)
    stored_artifact(playground, b"x" * 20, default)

    code, out = vacuum()

    assert code == 1
    assert "over its limit of 10" in out


def test_orphans_older_than_a_day_are_deleted(
    playground: Playground, directories: Path, vacuum: Vacuum
) -> None:
    default = FileStore.objects.get(name=FileStore.DEFAULT_NAME)
    kept = stored_artifact(playground, b"referenced", default)
    orphan = File(sha256=bytes(32), size=3)
    young = File(sha256=bytes(31) + b"\x01", size=3)
    for file in (orphan, young):
        # One source each: a Local store hard-links its source, and ages are per inode.
        source = directories / f"source-{file.size}-{file.hash_hex}"
        source.write_bytes(b"xyz")
        get_backend(default).put_contents(file, source, move=True)
    store_directory = directories / "store"
    make_old(store_directory / entry_name(orphan))
    leftover = store_directory / "aa" / ".temporary.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    make_old(leftover)

    code, out = vacuum()

    assert code == 0, out
    assert not (store_directory / entry_name(orphan)).exists()
    assert not leftover.exists()
    assert (store_directory / entry_name(young)).exists()
    assert (store_directory / entry_name(kept)).exists()
    assert "kept 1 unknown entries younger than a day" in out


def test_missing_contents_are_reported(
    playground: Playground, directories: Path, vacuum: Vacuum
) -> None:
    default = FileStore.objects.get(name=FileStore.DEFAULT_NAME)
    file = stored_artifact(playground, b"will vanish", default)
    (directories / "store" / entry_name(file)).unlink()
    artifact = FileInArtifact.objects.get(file=file).artifact
    playground.create_artifact(files=[FileSpec("never.bin", b"stored")], complete=True)

    code, out = vacuum()

    assert code == 1
    assert f"Problem: Store Default: contents of {file} are missing" in out
    assert (
        f"Problem: Artifact {artifact.pk + 1} file 'never.bin'" in out
        and "no store readable by scope debusine holds its contents" in out
    )


def test_incomplete_artifacts_and_stale_uploads_are_deleted(
    playground: Playground, directories: Path, vacuum: Vacuum
) -> None:
    stale = playground.create_artifact(
        files=[FileSpec("part.bin", b"partial upload")], created_at=timezone.now() - 2 * DAY
    )
    item = FileInArtifact.objects.get(artifact=stale)
    uploads = directories / "uploads"
    uploads.mkdir()
    (uploads / "partial").write_bytes(b"partial")
    FileUpload.objects.create(
        file_in_artifact=item, path="partial", last_activity_at=timezone.now() - 2 * DAY
    )
    recent = playground.create_artifact(files=[FileSpec("new.bin", b"new")])
    in_collection = playground.create_artifact(
        files=[FileSpec("kept.bin", b"kept")], created_at=timezone.now() - 2 * DAY
    )
    collection = Collection.objects.create(
        name="c", category="debusine:test", workspace=playground.workspace
    )
    CollectionItem.objects.create(
        name="kept",
        child_type="a",
        category="debusine:test",
        parent_collection=collection,
        parent_category="debusine:test",
        artifact=in_collection,
    )
    (uploads / "leftover").write_bytes(b"nobody")
    make_old(uploads / "leftover")

    code, out = vacuum()

    assert code == 0, out
    assert not Artifact.objects.filter(pk=stale.pk).exists()
    assert not (uploads / "partial").exists()
    assert not (uploads / "leftover").exists()
    assert Artifact.objects.filter(pk__in=[recent.pk, in_collection.pk]).count() == 2
    # The stale artifact's file is referenced by nothing now: its row went too.
    assert not File.objects.filter(pk=item.file_id).exists()


def test_dry_run_changes_nothing(playground: Playground, vacuum: Vacuum) -> None:
    old = playground.create_file_store("old", drain=True)
    file = stored_artifact(playground, b"stays", old)
    stale = playground.create_artifact(
        files=[FileSpec("p", b"p")], created_at=timezone.now() - 2 * DAY
    )

    code, out = vacuum("--dry-run")

    assert code == 0, out
    assert f"Would copy {file} from store old to store Default (drain)" in out
    assert f"Would remove {file} from store old (drain)" in out
    assert f"Would delete incomplete artifact {stale.pk}" in out
    assert out.endswith("action(s) planned, 0 problem(s)\n")
    assert stores_of(file) == {"old"}
    assert Artifact.objects.filter(pk=stale.pk).exists()


def test_an_entry_recorded_while_vacuum_lists_the_store_is_kept(
    playground: Playground, directories: Path
) -> None:
    from debusine.server.file_stores.vacuum import StorageVacuum

    default = FileStore.objects.get(name=FileStore.DEFAULT_NAME)
    contents = b"uploaded again just now"
    file = File.objects.create(sha256=hashlib.sha256(contents).digest(), size=len(contents))
    source = directories / "source"
    source.write_bytes(contents)
    get_backend(default).put_contents(file, source, move=True)
    make_old(directories / "store" / entry_name(file))

    class UploadCommitsDuringListing(StorageVacuum):
        """An upload of the same contents commits after the pass read what the store holds."""

        def backend(self, store: FileStore) -> FileBackend:
            backend = super().backend(store)
            entries = backend.list_entries

            def list_entries() -> Iterator[StoreEntry]:
                FileInStore.objects.get_or_create(store=store, file=file)
                yield from entries()

            backend.list_entries = list_entries  # type: ignore[method-assign]
            return backend

    UploadCommitsDuringListing().check_entries_of(default)

    assert (directories / "store" / entry_name(file)).read_bytes() == contents
