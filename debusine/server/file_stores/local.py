"""
The Local file store backend: contents as files under a base directory on this machine.

The `Default` store with no `base_directory` in its configuration uses
DEBUSINE_STORE_DIRECTORY. Every file and every directory created is fsynced before an
operation returns, so a file recorded in the database survives a crash.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from debusine.server.db.models import File, FileStore
from debusine.server.file_stores.base import (
    BoundedReader,
    FileBackend,
    FileStoreError,
    StoreEntry,
    entry_name,
)


def fsync_path(path: Path) -> None:
    """Flush a file or a directory to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend(FileBackend):
    """Contents under `base_directory`, at `aa/bb/cc/<sha256hex>-<size>`."""

    def __init__(self, store: FileStore) -> None:
        super().__init__(store)
        configured = store.configuration.get("base_directory")
        if configured:
            self.base_directory = Path(configured)
        elif store.name == FileStore.DEFAULT_NAME:
            self.base_directory = Path(settings.DEBUSINE_STORE_DIRECTORY)
        else:
            raise FileStoreError(
                f"Local file store {store.name!r} has no base_directory in its configuration"
            )

    def path_of(self, file: File) -> Path:
        """Where the contents of `file` live."""
        return self.base_directory / entry_name(file)

    def _make_directories(self, directory: Path) -> None:
        """Create `directory` and its missing parents, each made durable in its parent."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue  # created by a concurrent upload
            fsync_path(path.parent)

    def put_contents(self, file: File, local_path: Path, *, move: bool = False) -> None:
        destination = self.path_of(file)
        self._make_directories(destination.parent)
        if destination.exists():
            # Entries only appear by an atomic rename or link of complete, verified contents.
            # Stored again: it is young again, so that the vacuum pass, which deletes only
            # unknown entries older than a day, cannot take it for an orphan before the
            # database row of this upload commits.
            os.utime(destination)
            if move:
                local_path.unlink(missing_ok=True)
            return
        try:
            if move:
                local_path.rename(destination)
            else:
                os.link(local_path, destination)
        except FileExistsError:
            if move:
                local_path.unlink(missing_ok=True)
            return
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            self._copy_in(local_path, destination)
            if move:
                local_path.unlink(missing_ok=True)
            return
        fsync_path(destination)
        fsync_path(destination.parent)

    def _copy_in(self, source: Path, destination: Path) -> None:
        """Copy across filesystems: write a hidden temporary file, then rename it in place."""
        temporary = destination.with_name(f".{destination.name}.{secrets.token_hex(8)}.tmp")
        try:
            shutil.copyfile(source, temporary)
            fsync_path(temporary)
            temporary.rename(destination)
        finally:
            temporary.unlink(missing_ok=True)
        fsync_path(destination.parent)

    def has_contents(self, file: File) -> bool:
        try:
            return self.path_of(file).stat().st_size == file.size
        except FileNotFoundError:
            return False

    def open_contents(
        self, file: File, offset: int = 0, length: int | None = None
    ) -> io.BufferedIOBase:
        try:
            handle = open(self.path_of(file), "rb")  # noqa: SIM115 (the caller closes it)
        except FileNotFoundError as error:
            raise FileStoreError(f"{file} is missing from store {self.store.name!r}") from error
        if offset:
            handle.seek(offset)
        if length is None:
            return handle
        return io.BufferedReader(BoundedReader(handle, length))

    def remove_contents(self, file: File) -> None:
        self.path_of(file).unlink(missing_ok=True)

    def remove_entry(self, name: str) -> None:
        path = self.base_directory / name
        # Names come from list_entries; refuse anything that would leave the store anyway.
        if not path.resolve().is_relative_to(self.base_directory.resolve()):
            raise FileStoreError(f"entry {name!r} is outside store {self.store.name!r}")
        path.unlink(missing_ok=True)

    def remove_empty_directories(self, older_than: datetime) -> list[str]:
        removed: list[str] = []
        if not self.base_directory.is_dir():
            return removed
        # Bottom-up, so that a directory emptied by removing its children goes too.
        for directory, subdirectories, names in os.walk(self.base_directory, topdown=False):
            path = Path(directory)
            if path == self.base_directory or names:
                continue
            if any((path / sub).exists() for sub in subdirectories):
                continue
            try:
                changed_at = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
                if changed_at >= older_than:
                    continue
                path.rmdir()
            except OSError:
                continue  # gained an entry meanwhile, or already gone
            removed.append(path.relative_to(self.base_directory).as_posix())
        return removed

    def list_entries(self) -> Iterator[StoreEntry]:
        if not self.base_directory.is_dir():
            return
        for directory, _, names in os.walk(self.base_directory):
            for name in names:
                path = Path(directory, name)
                try:
                    status = path.stat()
                except FileNotFoundError:
                    continue  # removed while listing
                yield StoreEntry(
                    name=path.relative_to(self.base_directory).as_posix(),
                    size=status.st_size,
                    modified_at=datetime.fromtimestamp(status.st_mtime, tz=UTC),
                )
