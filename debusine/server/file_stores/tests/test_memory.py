"""The Memory backend keeps contents per store, for tests."""

from __future__ import annotations

from debusine.server.file_stores import get_backend
from debusine.server.file_stores.memory import MemoryBackend
from debusine.testing.playground import Playground


def test_stores_do_not_share_contents(playground: Playground) -> None:
    first = get_backend(playground.create_file_store("one"))
    second = get_backend(playground.create_file_store("two"))
    assert isinstance(first, MemoryBackend)

    file = playground.store_contents(b"abc", first.store)

    assert first.has_contents(file)
    assert not second.has_contents(file)
