"""Tests of the live log's batching and bounds (debusine.worker.live_log)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from debusine.worker import live_log
from debusine.worker.live_log import (
    MAX_FRAME_TEXT,
    MAX_FRAMES_PER_BATCH,
    MAX_PENDING,
    LiveLog,
)


class RecordingChannel:
    """Stands for the websocket: records frames (and when), or hangs, or is down."""

    def __init__(self, *, accepted: bool = True, hang: bool = False) -> None:
        self.accepted = accepted
        self.hang = hang
        self.frames: list[dict[str, Any]] = []
        self.sent_at: list[float] = []

    def live_log_accepted(self) -> bool:
        return self.accepted

    async def send_live_log_frame(self, frame: dict[str, Any]) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        self.frames.append(frame)
        self.sent_at.append(time.monotonic())

    def text(self, stream: str | None = None) -> str:
        return "".join(
            frame["data"]
            for frame in self.frames
            if frame["type"] == "log_data" and stream in (None, frame["stream"])
        )


def test_output_is_batched_in_whole_lines_of_bounded_frames() -> None:
    channel = RecordingChannel()
    log = LiveLog(7, None, channel)
    lines = [f"line {number:05d} {'x' * 100}\n" for number in range(1000)]
    for line in lines:
        log.add_output("stdout", line.encode())
    frames = log.take_frames()
    assert len(frames) == MAX_FRAMES_PER_BATCH
    for frame in frames:
        assert frame["type"] == "log_data"
        assert frame["work_request_id"] == 7
        assert frame["stream"] == "stdout"
        assert 0 < len(frame["data"]) <= MAX_FRAME_TEXT
        assert frame["data"].endswith("\n")
        assert frame["timestamp"]
    rest = log.take_frames(limit=None)
    assert "".join(frame["data"] for frame in frames + rest) == "".join(lines)
    assert log.pending_chars == 0


def test_streams_keep_their_order_and_a_line_longer_than_a_frame_is_cut() -> None:
    log = LiveLog(1, None, RecordingChannel())
    log.add_output("stdout", b"out 1\nout 2\n")
    log.add_output("stderr", b"err 1\n")
    log.add_output("stdout", b"y" * (MAX_FRAME_TEXT + 10))
    frames = log.take_frames(limit=None)
    assert [(frame["stream"], len(frame["data"])) for frame in frames] == [
        ("stdout", 12),
        ("stderr", 6),
        ("stdout", MAX_FRAME_TEXT),
        ("stdout", 10),
    ]


def test_a_character_split_between_two_reads_is_kept_whole() -> None:
    log = LiveLog(1, None, RecordingChannel())
    encoded = "café\n".encode()
    log.add_output("stdout", encoded[:4])
    log.add_output("stdout", encoded[4:])
    [frame] = log.take_frames()
    assert frame["data"] == "café\n"


def test_output_beyond_the_bound_is_skipped_with_a_note() -> None:
    log = LiveLog(1, None, RecordingChannel())
    line = "z" * 99 + "\n"
    for _ in range(2 * MAX_PENDING // len(line)):
        log.add_output("stdout", line.encode())
        assert log.pending_chars <= MAX_PENDING
    skipped = log.skipped_lines
    assert skipped > 0
    frames = log.take_frames(limit=None)
    assert frames[-1]["stream"] == "internal"
    assert (
        frames[-1]["data"]
        == f"[live log: {skipped} lines skipped; the debug logs have everything]\n"
    )
    # Room again: the next output follows the note.
    log.add_output("stdout", b"after\n")
    assert log.take_frames()[-1]["data"] == "after\n"


def test_nothing_is_kept_or_sent_when_the_server_does_not_take_live_logs(tmp_path: Path) -> None:
    channel = RecordingChannel(accepted=False)
    (tmp_path / "build.log").write_text("something\n")
    log = LiveLog(1, tmp_path, channel)
    log.add_output("stdout", b"hello\n")
    assert log.pending == []

    async def main() -> None:
        await log.send_batch()
        await log.finish(0)

    asyncio.run(main())
    assert channel.frames == []


def test_debug_logs_are_followed_line_by_line(tmp_path: Path) -> None:
    channel = RecordingChannel()
    log = LiveLog(3, tmp_path, channel)
    with (tmp_path / "build.log").open("a") as stream:
        stream.write("first line\nhalf a li")
        stream.flush()
        log.collect_debug_logs()
        assert [frame["data"] for frame in log.take_frames(limit=None)] == [
            "==> build.log <==\n",
            "first line\n",
        ]
        stream.write("ne\n")
        stream.flush()
    log.collect_debug_logs()
    assert [frame["data"] for frame in log.take_frames(limit=None)] == ["half a line\n"]
    # The task's own output after a debug log's says so.
    log.add_output("stderr", b"warning\n")
    assert [(frame["stream"], frame["data"]) for frame in log.take_frames(limit=None)] == [
        ("internal", "==> task output <==\n"),
        ("stderr", "warning\n"),
    ]
    # At the end, an unfinished last line is sent too, then the end frame.
    (tmp_path / "stages.log").write_text("stage started\nno newline yet")
    asyncio.run(log.finish(1))
    assert [
        (frame["type"], frame.get("stream"), frame.get("data")) for frame in channel.frames
    ] == [
        ("log_data", "internal", "==> stages.log <==\n"),
        ("log_data", "stdout", "stage started\nno newline yet"),
        ("log_data_end", None, None),
    ]
    assert channel.frames[-1]["exit_code"] == 1


def test_a_debug_log_growing_faster_than_the_bound_is_skipped(tmp_path: Path) -> None:
    log = LiveLog(1, tmp_path, RecordingChannel())
    (tmp_path / "huge.log").write_bytes(b"w" * 99 + b"\n" + b"v" * (MAX_PENDING + 1) + b"\n")
    log.collect_debug_logs()
    [frame] = log.take_frames(limit=None)
    assert frame["stream"] == "internal"
    assert frame["data"] == (
        f"==> huge.log <==\n[live log: {MAX_PENDING + 102} bytes of huge.log skipped]\n"
    )
    with (tmp_path / "huge.log").open("a") as stream:
        stream.write("after the flood\n")
    log.collect_debug_logs()
    assert [frame["data"] for frame in log.take_frames(limit=None)] == ["after the flood\n"]


def test_batches_are_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_log, "BATCH_INTERVAL", 0.1)
    channel = RecordingChannel()
    log = LiveLog(1, None, channel)
    for number in range(20_000):
        log.add_output("stdout", f"line {number} {'q' * 40}\n".encode())

    async def main() -> None:
        batches = asyncio.create_task(log.run())
        await asyncio.sleep(0.55)
        batches.cancel()

    asyncio.run(main())
    # Five intervals: at most five batches of MAX_FRAMES_PER_BATCH frames.
    assert 0 < len(channel.frames) <= 5 * MAX_FRAMES_PER_BATCH
    assert all(len(frame["data"]) <= MAX_FRAME_TEXT for frame in channel.frames)


def test_a_stuck_websocket_never_holds_the_output_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_log, "SEND_TIMEOUT", 0.1)
    channel = RecordingChannel(hang=True)
    log = LiveLog(1, None, channel)

    async def main() -> None:
        log.add_output("stdout", b"one\ntwo\n")
        started = time.monotonic()
        await log.send_batch()
        assert time.monotonic() - started < 1
        # The task's output is still taken (nothing waits on the websocket)...
        log.add_output("stdout", b"three\n")
        # ...and what could not be sent is counted as skipped, said once it works again.
        channel.hang = False
        await log.finish(0)

    asyncio.run(main())
    assert channel.text() == "[live log: 2 lines skipped; the debug logs have everything]\nthree\n"
    assert channel.frames[-1]["type"] == "log_data_end"
    assert channel.frames[-1]["exit_code"] == 0
