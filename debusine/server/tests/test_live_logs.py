"""The live-log store: positions never move; past the cap, one note, then only the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from debusine.server.work_requests import live_logs


@pytest.fixture
def small_cap(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    settings.DEBUSINE_REDIS_KEY_PREFIX = f"test-live-logs-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(live_logs, "MAX_FRAMES", 3)
    yield
    live_logs.redis_client().delete(live_logs.key(7))


def log_frame(text: str) -> dict[str, Any]:
    stored = live_logs.frame_to_store(
        {"type": "log_data", "work_request_id": 7, "stream": "stdout", "data": text}
    )
    assert stored is not None
    return stored


def test_past_the_cap_one_note_then_only_the_end(small_cap: None) -> None:
    for index in range(6):
        live_logs.append(log_frame(f"line {index}\n"))
    end = live_logs.frame_to_store({"type": "log_data_end", "work_request_id": 7, "exit_code": 0})
    assert end is not None
    live_logs.append(end)

    frames, next_position = live_logs.read(7)

    assert [frame.get("data") for frame in frames] == [
        "line 0\n",
        "line 1\n",
        "line 2\n",
        live_logs.TRUNCATED_NOTE,
        None,
    ]
    assert frames[3]["stream"] == "internal"
    assert frames[4]["exit_code"] == 0
    assert next_position == 5
    # A follower at position 2 sees the same frames from there: positions did not move.
    assert live_logs.read(7, 2)[0] == frames[2:]


def test_web_page_reads_text_and_the_end_even_past_it(small_cap: None) -> None:
    live_logs.append(log_frame("hello\n"))
    page = live_logs.read_page(7, 0)
    assert (page.pieces, page.next_offset, page.ended) == (
        [{"stream": "stdout", "data": "hello\n"}],
        1,
        False,
    )
    end = live_logs.frame_to_store({"type": "log_data_end", "work_request_id": 7})
    assert end is not None
    live_logs.append(end)
    assert live_logs.read_page(7, 1).ended
    # A later poll, already past the end frame, is told it ended too.
    assert live_logs.read_page(7, 2).ended
    assert live_logs.read_page(7, 2).pieces == []
