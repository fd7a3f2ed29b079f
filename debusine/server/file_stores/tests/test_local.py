"""The Local backend: its directory layout, the Default store, and copies across filesystems."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from debusine.server.db.models import File, FileStore
from debusine.server.file_stores import FileStoreError, get_backend
from debusine.server.file_stores.local import LocalBackend
from debusine.testing.playground import Playground

CONTENTS = b"local contents\n"


def make_file(contents: bytes = CONTENTS) -> File:
    return File.objects.get_or_create_by_hash(hashlib.sha256(contents).digest(), len(contents))


def local_store(playground: Playground, base_directory: Path) -> LocalBackend:
    store = playground.create_file_store(
        "local", backend="Local", configuration={"base_directory": str(base_directory)}
    )
    backend = get_backend(store)
    assert isinstance(backend, LocalBackend)
    return backend


def test_default_store_uses_the_store_directory_setting(
    playground: Playground, file_directories: Path
) -> None:
    backend = get_backend(FileStore.objects.get(name=FileStore.DEFAULT_NAME))
    assert isinstance(backend, LocalBackend)
    assert backend.base_directory == file_directories / "store"


def test_other_local_store_needs_a_base_directory(playground: Playground) -> None:
    store = playground.create_file_store("nowhere", backend="Local")
    with pytest.raises(FileStoreError, match="base_directory"):
        get_backend(store)


def test_layout_is_three_levels_of_hash_prefixes(playground: Playground, tmp_path: Path) -> None:
    backend = local_store(playground, tmp_path / "store")
    file = make_file()
    source = tmp_path / "source"
    source.write_bytes(CONTENTS)

    backend.add_file(file, source, move=True)

    digest = hashlib.sha256(CONTENTS).hexdigest()
    path = tmp_path / "store" / digest[:2] / digest[2:4] / digest[4:6] / f"{digest}-15"
    assert path.read_bytes() == CONTENTS
    assert backend.path_of(file) == path


def test_move_on_one_filesystem_is_a_rename(playground: Playground, tmp_path: Path) -> None:
    backend = local_store(playground, tmp_path / "store")
    file = make_file()
    source = tmp_path / "source"
    source.write_bytes(CONTENTS)
    inode = source.stat().st_ino

    backend.put_contents(file, source, move=True)

    assert backend.path_of(file).stat().st_ino == inode


def test_add_without_move_on_one_filesystem_is_a_hard_link(
    playground: Playground, tmp_path: Path
) -> None:
    backend = local_store(playground, tmp_path / "store")
    file = make_file()
    source = tmp_path / "source"
    source.write_bytes(CONTENTS)

    backend.put_contents(file, source)

    assert backend.path_of(file).stat().st_ino == source.stat().st_ino


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat("/tmp").st_dev,
    reason="needs /dev/shm on another filesystem than the temporary directory",
)
@pytest.mark.parametrize("move", [True, False])
def test_across_filesystems_contents_are_copied(
    playground: Playground, tmp_path: Path, move: bool
) -> None:
    base_directory = Path("/dev/shm") / f"debusine-test-{os.getpid()}-{tmp_path.name}"
    try:
        backend = local_store(playground, base_directory)
        file = make_file()
        source = tmp_path / "source"
        source.write_bytes(CONTENTS)

        backend.put_contents(file, source, move=move)

        assert backend.path_of(file).read_bytes() == CONTENTS
        assert source.exists() is not move
        # No temporary file is left next to the entry.
        assert [entry.name for entry in backend.list_entries()] == [
            backend.path_of(file).relative_to(base_directory).as_posix()
        ]
    finally:
        for path in sorted(base_directory.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        base_directory.rmdir()


def test_list_entries_reports_leftovers(playground: Playground, tmp_path: Path) -> None:
    backend = local_store(playground, tmp_path / "store")
    (tmp_path / "store" / "aa").mkdir(parents=True)
    (tmp_path / "store" / "aa" / "stray").write_bytes(b"12")

    assert [(entry.name, entry.size) for entry in backend.list_entries()] == [("aa/stray", 2)]


def test_list_entries_of_a_missing_directory_is_empty(
    playground: Playground, tmp_path: Path
) -> None:
    assert list(local_store(playground, tmp_path / "absent").list_entries()) == []


def test_storing_an_existing_entry_again_makes_it_young(
    playground: Playground, tmp_path: Path
) -> None:
    backend = local_store(playground, tmp_path / "store")
    file = make_file()
    first = tmp_path / "first"
    first.write_bytes(CONTENTS)
    backend.put_contents(file, first)
    entry = backend.path_of(file)
    two_days_ago = entry.stat().st_mtime - 2 * 86400
    os.utime(entry, (two_days_ago, two_days_ago))
    again = tmp_path / "again"
    again.write_bytes(CONTENTS)

    backend.put_contents(file, again, move=True)

    # file_store vacuum deletes unknown entries only when older than a day: an entry stored
    # again for an upload not yet committed must not look old.
    assert entry.stat().st_mtime > two_days_ago + 86400
    assert not again.exists()
