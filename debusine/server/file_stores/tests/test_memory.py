"""The Memory backend keeps contents per store, for tests."""

from __future__ import annotations

import hashlib

from debusine.server.db.models import File
from debusine.server.file_stores import get_backend
from debusine.server.file_stores.memory import MemoryBackend
from debusine.server.testing import Playground


def test_stores_do_not_share_contents(playground: Playground) -> None:
    file = File.objects.get_or_create_by_hash(hashlib.sha256(b"abc").digest(), 3)
    first = get_backend(playground.create_file_store("one"))
    second = get_backend(playground.create_file_store("two"))
    assert isinstance(first, MemoryBackend)

    first.put_bytes(file, b"abc")

    assert first.has_contents(file)
    assert not second.has_contents(file)
