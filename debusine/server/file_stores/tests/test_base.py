"""The file store contract, checked against every backend (Local, Memory, and S3 on moto)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.db import transaction

from debusine.server.db.models import File, FileInStore, FileStore
from debusine.server.file_stores import FileStoreError, get_backend
from debusine.server.file_stores.base import FileBackend, entry_name, parse_entry_name
from debusine.testing.moto import MotoS3Server
from debusine.testing.playground import Playground

CONTENTS = b"0123456789" * 1000


@pytest.fixture(params=["Local", "Memory", "S3"])
def backend(request: pytest.FixtureRequest, playground: Playground, tmp_path: Path) -> FileBackend:
    """A fresh store of each backend kind, used by the default scope."""
    configuration: dict[str, object] = {}
    if request.param == "Local":
        configuration = {"base_directory": str(tmp_path / "store")}
    elif request.param == "S3":
        moto_s3: MotoS3Server = request.getfixturevalue("moto_s3")
        configuration = moto_s3.store_configuration(moto_s3.new_bucket())
    store = playground.create_file_store(
        f"test-{request.param}", backend=request.param, configuration=configuration
    )
    return get_backend(store)


def make_file(contents: bytes = CONTENTS) -> File:
    return File.objects.get_or_create_by_hash(hashlib.sha256(contents).digest(), len(contents))


def write_source(tmp_path: Path, contents: bytes = CONTENTS) -> Path:
    # A new path each time: a Local store may hard-link the source it was given.
    source = tmp_path / hashlib.sha256(contents).hexdigest()
    if source.exists():
        source = tmp_path / f"{source.name}-again"
    source.write_bytes(contents)
    return source


def test_entry_name_is_content_addressed() -> None:
    file = File(sha256=hashlib.sha256(b"x").digest(), size=1)
    hex_digest = hashlib.sha256(b"x").hexdigest()
    name = entry_name(file)
    assert name == f"{hex_digest[:2]}/{hex_digest[2:4]}/{hex_digest[4:6]}/{hex_digest}-1"
    assert parse_entry_name(name) == (bytes.fromhex(hex_digest), 1)
    assert parse_entry_name(f"{name}.tmp") is None
    assert parse_entry_name("../etc/passwd") is None


def test_add_file_stores_contents_and_records_them(backend: FileBackend, tmp_path: Path) -> None:
    file = make_file()
    before = FileStore.objects.get(pk=backend.store.pk).total_size

    backend.add_file(file, write_source(tmp_path))

    assert backend.has_contents(file)
    with backend.open_contents(file) as reader:
        assert reader.read() == CONTENTS
    assert FileInStore.objects.filter(store=backend.store, file=file).count() == 1
    # The database trigger keeps the store's total size.
    assert FileStore.objects.get(pk=backend.store.pk).total_size == before + len(CONTENTS)


def test_add_file_twice_is_harmless(backend: FileBackend, tmp_path: Path) -> None:
    file = make_file()
    backend.add_file(file, write_source(tmp_path))
    backend.add_file(file, write_source(tmp_path))

    assert FileInStore.objects.filter(store=backend.store, file=file).count() == 1
    assert FileStore.objects.get(pk=backend.store.pk).total_size == len(CONTENTS)


def test_add_file_with_move_gives_the_source_up(backend: FileBackend, tmp_path: Path) -> None:
    file = make_file()
    source = write_source(tmp_path)

    backend.add_file(file, source, move=True)

    assert not source.exists()
    with backend.open_contents(file) as reader:
        assert reader.read() == CONTENTS


def test_add_file_without_move_keeps_the_source(backend: FileBackend, tmp_path: Path) -> None:
    source = write_source(tmp_path)
    backend.add_file(make_file(), source)
    assert source.read_bytes() == CONTENTS


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, None, CONTENTS),
        (5, None, CONTENTS[5:]),
        (3, 7, CONTENTS[3:10]),
        (9990, 100, b"0123456789"),
    ],
)
def test_open_contents_reads_a_range(
    backend: FileBackend, tmp_path: Path, offset: int, length: int | None, expected: bytes
) -> None:
    file = make_file()
    backend.add_file(file, write_source(tmp_path))
    with backend.open_contents(file, offset, length) as reader:
        assert reader.read() == expected


def test_open_missing_contents_fails_clearly(backend: FileBackend) -> None:
    with pytest.raises(FileStoreError, match="missing"):
        backend.open_contents(make_file())


def test_remove_file_removes_contents_after_commit(
    backend: FileBackend, tmp_path: Path, django_capture_on_commit_callbacks: object
) -> None:
    file = make_file()
    backend.add_file(file, write_source(tmp_path))

    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        backend.remove_file(file)

    assert not backend.has_contents(file)
    assert not FileInStore.objects.filter(store=backend.store, file=file).exists()
    assert FileStore.objects.get(pk=backend.store.pk).total_size == 0


def test_remove_file_rolled_back_keeps_contents(backend: FileBackend, tmp_path: Path) -> None:
    file = make_file()
    backend.add_file(file, write_source(tmp_path))

    with pytest.raises(RuntimeError), transaction.atomic():
        backend.remove_file(file)
        raise RuntimeError("roll back")

    assert backend.has_contents(file)
    assert FileInStore.objects.filter(store=backend.store, file=file).exists()


def test_remove_missing_contents_is_not_an_error(backend: FileBackend) -> None:
    backend.remove_contents(make_file())


def test_list_entries(backend: FileBackend, tmp_path: Path) -> None:
    first, second = make_file(b"first"), make_file(b"second!")
    backend.add_file(first, write_source(tmp_path, b"first"))
    backend.add_file(second, write_source(tmp_path, b"second!"))

    entries = {entry.name: entry.size for entry in backend.list_entries()}

    assert entries == {entry_name(first): 5, entry_name(second): 7}


def test_remove_entry_removes_a_leftover(backend: FileBackend, tmp_path: Path) -> None:
    file = make_file()
    backend.put_contents(file, write_source(tmp_path))

    backend.remove_entry(entry_name(file))

    assert not backend.has_contents(file)
    assert list(backend.list_entries()) == []


def test_contents_of_the_wrong_size_are_not_the_file(backend: FileBackend, tmp_path: Path) -> None:
    truncated = write_source(tmp_path, CONTENTS[:-1])
    backend.put_contents(make_file(), truncated)
    assert not backend.has_contents(make_file())


def test_only_s3_offers_redirect_urls(backend: FileBackend) -> None:
    url = backend.redirect_url(make_file())
    if backend.store.backend == "S3":
        assert url is not None and entry_name(make_file()) in url
    else:
        assert url is None


def test_unsupported_backend(playground: Playground) -> None:
    store = FileStore.objects.create(name="external", backend="External")
    with pytest.raises(FileStoreError, match="not supported"):
        get_backend(store)
