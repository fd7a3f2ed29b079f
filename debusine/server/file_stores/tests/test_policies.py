"""Choosing the upload store and the download store of a scope."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from debusine.server.db.models import File, FileStore, FileStoreInScope, Scope
from debusine.server.file_stores.policies import (
    NoUploadStoreError,
    download_store,
    download_stores,
    upload_store,
)
from debusine.testing.playground import Playground


@pytest.fixture
def scope(playground: Playground) -> Scope:
    """A scope with no store yet."""
    return Scope.objects.create(name="policies")


def make_file(contents: bytes) -> File:
    return File.objects.get_or_create_by_hash(hashlib.sha256(contents).digest(), len(contents))


def test_default_scope_uploads_to_the_default_store(playground: Playground) -> None:
    assert upload_store(playground.scope, 10).name == FileStore.DEFAULT_NAME


def test_upload_goes_to_the_highest_upload_priority(playground: Playground, scope: Scope) -> None:
    playground.create_file_store("unranked", scope=scope)
    playground.create_file_store("low", scope=scope, upload_priority=1)
    playground.create_file_store("high", scope=scope, upload_priority=10)

    assert upload_store(scope, 1).name == "high"


def test_upload_skips_read_only_and_write_only(playground: Playground, scope: Scope) -> None:
    playground.create_file_store("frozen", scope=scope, upload_priority=10, read_only=True)
    playground.create_file_store("backup", scope=scope, upload_priority=5, write_only=True)
    playground.create_file_store("plain", scope=scope, upload_priority=1)

    # A file only in a write-only store could never be downloaded.
    assert upload_store(scope, 1).name == "plain"


def test_upload_skips_stores_that_would_exceed_max_size(
    playground: Playground, scope: Scope
) -> None:
    small = playground.create_file_store("small", scope=scope, upload_priority=10, max_size=100)
    playground.create_file_store("big", scope=scope, upload_priority=1)
    playground.store_contents(b"x" * 60, small)

    assert upload_store(scope, 40).name == "small"
    assert upload_store(scope, 41).name == "big"


def test_no_upload_store(playground: Playground, scope: Scope) -> None:
    playground.create_file_store("frozen", scope=scope, read_only=True)
    with pytest.raises(NoUploadStoreError, match="policies"):
        upload_store(scope, 1)


def test_download_prefers_download_priority_then_upload_priority(
    playground: Playground, scope: Scope
) -> None:
    priorities: dict[str, dict[str, Any]] = {
        "a": {"download_priority": 5, "upload_priority": 1},
        "b": {"download_priority": 5, "upload_priority": 2},
        "c": {"download_priority": 1, "upload_priority": 9},
        "unranked": {},
    }
    stores = {
        name: playground.create_file_store(name, scope=scope, **policies)
        for name, policies in priorities.items()
    }
    file = make_file(b"everywhere")
    for store in stores.values():
        playground.store_contents(b"everywhere", store)

    assert download_store(scope, file) == stores["b"]
    FileStoreInScope.objects.filter(file_store=stores["b"]).update(download_priority=None)
    assert download_store(scope, file) == stores["a"]


def test_download_skips_write_only_and_stores_without_the_file(
    playground: Playground, scope: Scope
) -> None:
    backup = playground.create_file_store(
        "backup", scope=scope, download_priority=9, write_only=True
    )
    empty = playground.create_file_store("empty", scope=scope, download_priority=5)
    main = playground.create_file_store("main", scope=scope, download_priority=1)
    file = playground.store_contents(b"data", backup)
    playground.store_contents(b"data", main)
    playground.store_contents(b"other", empty)

    assert download_store(scope, file) == main


def test_download_ignores_stores_of_other_scopes(playground: Playground, scope: Scope) -> None:
    elsewhere = playground.create_file_store("elsewhere")  # the default scope's
    file = playground.store_contents(b"data", elsewhere)

    assert download_store(scope, file) is None


def test_download_stores_for_many_files_in_two_queries(
    playground: Playground, scope: Scope, django_assert_num_queries: object
) -> None:
    first = playground.create_file_store("first", scope=scope, download_priority=2)
    second = playground.create_file_store("second", scope=scope, download_priority=1)
    files = [playground.store_contents(f"file {n}".encode(), second) for n in range(20)]
    playground.store_contents(b"file 3", first)
    missing = make_file(b"nowhere")

    with django_assert_num_queries(2):  # type: ignore[operator]
        chosen = download_stores(scope, [*files, missing])

    assert chosen == {file.pk: (first if n == 3 else second) for n, file in enumerate(files)}
