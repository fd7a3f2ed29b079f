"""
The Memory file store backend: contents in a dictionary of this process (for tests).

Contents are keyed by the store's primary key, so stores of different tests never share
contents even when they reuse a name.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from django.utils import timezone

from debusine.server.db.models import File
from debusine.server.file_stores.base import FileBackend, FileStoreError, StoreEntry, entry_name

#: store pk → entry name → (contents, when they were added)
_CONTENTS: dict[int, dict[str, tuple[bytes, datetime]]] = {}


class MemoryBackend(FileBackend):
    """Contents held in `_CONTENTS` for as long as the process lives."""

    @property
    def _entries(self) -> dict[str, tuple[bytes, datetime]]:
        return _CONTENTS.setdefault(self.store.pk, {})

    def put_contents(self, file: File, local_path: Path, *, move: bool = False) -> None:
        self._entries[entry_name(file)] = (local_path.read_bytes(), timezone.now())
        if move:
            local_path.unlink(missing_ok=True)

    def has_contents(self, file: File) -> bool:
        entry = self._entries.get(entry_name(file))
        return entry is not None and len(entry[0]) == file.size

    def open_contents(
        self, file: File, offset: int = 0, length: int | None = None
    ) -> io.BufferedIOBase:
        try:
            contents, _ = self._entries[entry_name(file)]
        except KeyError as error:
            raise FileStoreError(f"{file} is missing from store {self.store.name!r}") from error
        end = len(contents) if length is None else offset + length
        return io.BytesIO(contents[offset:end])

    def remove_contents(self, file: File) -> None:
        self._entries.pop(entry_name(file), None)

    def remove_entry(self, name: str) -> None:
        self._entries.pop(name, None)

    def list_entries(self) -> Iterator[StoreEntry]:
        for name, (contents, added_at) in list(self._entries.items()):
            yield StoreEntry(name=name, size=len(contents), modified_at=added_at)
