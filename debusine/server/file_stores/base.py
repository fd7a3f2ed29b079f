"""
The interface every file store backend implements.

A backend is built from a `FileStore` row (its `backend` and `configuration`). It holds file
contents addressed by SHA-256 and size, under entry names `aa/bb/cc/<sha256hex>-<size>`, and
keeps the `FileInStore` rows that say which files it holds. Only verified contents may be
added: a partial upload never reaches a store.
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.db import transaction

from debusine.server.db.models import File, FileInStore, FileStore

ENTRY_NAME_RE = re.compile(r"^(?:[0-9a-f]{2}/){3}(?P<sha256>[0-9a-f]{64})-(?P<size>[0-9]+)$")


def entry_name(file: File) -> str:
    """The content-addressed name of `file` inside a store: `aa/bb/cc/<sha256hex>-<size>`."""
    hex_digest = file.hash_hex
    return f"{hex_digest[0:2]}/{hex_digest[2:4]}/{hex_digest[4:6]}/{hex_digest}-{file.size}"


def parse_entry_name(name: str) -> tuple[bytes, int] | None:
    """The (sha256, size) an entry name stands for, or None for anything else (temp files)."""
    match = ENTRY_NAME_RE.match(name)
    if match is None:
        return None
    return bytes.fromhex(match["sha256"]), int(match["size"])


@dataclass(frozen=True)
class StoreEntry:
    """One entry found in a store: what vacuuming compares with the `FileInStore` rows."""

    name: str
    size: int
    modified_at: datetime


class FileStoreError(Exception):
    """A store cannot be used as configured, or an operation on it failed."""


class FileStoreUnavailableError(FileStoreError):
    """
    The store did not answer in time, could not be reached, or answered with a transient
    error (S3's 5xx, SlowDown): the same operation may well succeed later.
    """


class BoundedReader(io.RawIOBase):
    """Read at most `length` bytes of an underlying binary file (for HTTP ranges)."""

    def __init__(self, raw: io.BufferedIOBase | io.RawIOBase, length: int) -> None:
        super().__init__()
        self._raw = raw
        self._remaining = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._remaining <= 0:
            return 0
        view = memoryview(buffer)[: self._remaining]
        count = self._raw.readinto(view) or 0
        self._remaining -= count
        return count

    def close(self) -> None:
        self._raw.close()
        super().close()


class FileBackend(ABC):
    """Operations on the contents held by one file store."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    # --- Contents (implemented by each backend) ---------------------------------------------

    @abstractmethod
    def put_contents(self, file: File, local_path: Path, *, move: bool = False) -> None:
        """
        Durably store the verified contents of `file` read from `local_path`.

        With `move` the caller gives the local file up (it may be renamed into the store).
        Without it the local file must stay as it is; backends may hard-link it, so callers
        pass only files that nobody modifies afterwards. Storing contents that are already
        present is harmless.
        """

    @abstractmethod
    def has_contents(self, file: File) -> bool:
        """Whether the store holds contents of the size of `file` under its name."""

    @abstractmethod
    def open_contents(
        self, file: File, offset: int = 0, length: int | None = None
    ) -> io.BufferedIOBase:
        """Open the contents of `file` for reading, from `offset`, at most `length` bytes."""

    @abstractmethod
    def remove_contents(self, file: File) -> None:
        """Remove the contents of `file` (missing contents are not an error)."""

    @abstractmethod
    def remove_entry(self, name: str) -> None:
        """Remove the entry `name` as listed by `list_entries` (vacuuming leftovers)."""

    @abstractmethod
    def list_entries(self) -> Iterator[StoreEntry]:
        """Every entry in the store, including leftovers that match no file."""

    def remove_empty_directories(self, older_than: datetime) -> list[str]:
        """Remove empty directories last changed before `older_than`; return their names."""
        return []

    def redirect_url(self, file: File) -> str | None:
        """A URL clients may download `file` from directly, if the backend offers one."""
        return None

    # --- Contents and their FileInStore rows -------------------------------------------------

    def add_file(self, file: File, local_path: Path, *, move: bool = False) -> None:
        """Store verified contents, then record that this store holds `file`."""
        self.put_contents(file, local_path, move=move)
        self.record(file)

    def record(self, file: File) -> None:
        """Record that this store holds `file` (recording it twice is harmless)."""
        # ON CONFLICT DO NOTHING: concurrent uploads of the same contents race here, and the
        # total_size trigger only fires for rows actually inserted.
        FileInStore.objects.bulk_create(
            [FileInStore(store=self.store, file=file)], ignore_conflicts=True
        )

    def remove_file(self, file: File) -> None:
        """Forget that this store holds `file`, and remove the contents once that commits."""
        FileInStore.objects.filter(store=self.store, file=file).delete()
        # Contents go only after the row: a rolled-back transaction must not leave a row
        # pointing at removed contents.
        transaction.on_commit(lambda: self.remove_contents(file))
