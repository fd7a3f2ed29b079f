"""
A running task's live log: what it prints and writes to its debug logs, sent to the server as
`log_data` frames on the worker websocket while it runs, then one `log_data_end` frame
(protocol-versions.md §1.3, as Debusine 0.16 workers send them).

Only sent to a server whose `connected` frame lists `log_data` in `accepts` (ours does; a
Debusine 0.11 server would silently drop the frames, and older peers are not to be surprised),
and only while the websocket is up. Never in the task's way: the task writes to pipes the
daemon always reads (`runner`) and to its debug log files, and this module only reads.

Bounded in rate and memory:
- one batch every BATCH_INTERVAL seconds, of at most MAX_FRAMES_PER_BATCH frames of at most
  MAX_FRAME_TEXT characters each; whole lines only, unless a line is longer than a frame;
- at most MAX_PENDING characters wait to be sent (the websocket is down, or the server slow);
  output beyond that is dropped and replaced by one `internal` note saying how many lines
  were skipped;
- a debug log file is read from where the last batch stopped; when it has grown by more than
  MAX_PENDING bytes since, the excess is skipped (with a note) rather than read.
The final logs still go up as the work request's debug-log artifact, whole.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from debusine.protocol.workers import FRAME_LOG_DATA, FRAME_LOG_DATA_END, LogStream

logger = logging.getLogger("debusine.worker")

#: Seconds between two batches.
BATCH_INTERVAL = 0.5
#: Frames sent per batch (so at most 2 x 3 frames a second).
MAX_FRAMES_PER_BATCH = 3
#: Characters of output in one frame.
MAX_FRAME_TEXT = 16 * 1024
#: Characters of output waiting to be sent, at most; the rest is skipped.
MAX_PENDING = 256 * 1024
#: Header of the task process's own output, after text from a debug log file.
OUTPUT_HEADER = "task output"
#: Seconds between two looks at the debug log files when the task's output comes in.
DEBUG_LOG_LOOK_INTERVAL = 0.02
#: Seconds one frame may take to be handed to the websocket before the batch is given up.
SEND_TIMEOUT = 10.0


class LogChannel(Protocol):
    """Where the frames go: the daemon's websocket, when it is up and the server wants them."""

    def live_log_accepted(self) -> bool:
        """Whether frames can be sent now."""

    async def send_live_log_frame(self, frame: dict[str, Any]) -> None:
        """Send one frame (raises when it cannot)."""


def now() -> str:
    return datetime.now(UTC).isoformat()


def log_frame(work_request_id: int, stream: LogStream, data: str) -> dict[str, Any]:
    return {
        "type": FRAME_LOG_DATA,
        "work_request_id": work_request_id,
        "stream": stream,
        "data": data,
        "timestamp": now(),
    }


def end_frame(work_request_id: int, exit_code: int) -> dict[str, Any]:
    return {
        "type": FRAME_LOG_DATA_END,
        "work_request_id": work_request_id,
        "exit_code": exit_code,
        "timestamp": now(),
    }


def utf8_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def skipped_note(lines: int) -> str:
    plural = "" if lines == 1 else "s"
    return f"[live log: {lines} line{plural} skipped; the debug logs have everything]\n"


class LiveLog:
    """The live log of one work request while its task runs."""

    def __init__(
        self, work_request_id: int, debug_log_directory: Path | None, channel: LogChannel
    ) -> None:
        self.work_request_id = work_request_id
        self.debug_log_directory = debug_log_directory
        self.channel = channel
        #: Text waiting to be sent, in order: (stream, text), neighbours of one stream merged.
        self.pending: list[tuple[LogStream, str]] = []
        self.pending_chars = 0
        #: Lines dropped since the last note about it.
        self.skipped_lines = 0
        #: Per output stream, the decoder keeping a character cut between two reads.
        self._decoders = {stream: utf8_decoder() for stream in ("stdout", "stderr")}
        self._file_decoders: dict[str, codecs.IncrementalDecoder] = {}
        #: Per debug log file name, the bytes of it already taken.
        self.offsets: dict[str, int] = {}
        #: The debug log file the last text came from (None: the task's own output).
        self._current_file: str | None = None
        self._debug_logs_looked_at = 0.0
        #: Frames sent (for tests and the log).
        self.frames_sent = 0

    # --- Collecting ----------------------------------------------------------------------

    def add_output(self, stream: LogStream, data: bytes) -> None:
        """Output of the task process (from its pipes): keep it if there is room."""
        if stream == "internal":  # pragma: no cover - the pipes are stdout and stderr
            return
        text = self._decoders[stream].decode(data)
        if not self.channel.live_log_accepted():
            return  # nobody to send it to: not worth keeping
        if not text:
            return
        # What the task wrote to its debug logs before this comes first (looked at no more
        # than every DEBUG_LOG_LOOK_INTERVAL seconds: a task may print many small pieces).
        if time.monotonic() - self._debug_logs_looked_at >= DEBUG_LOG_LOOK_INTERVAL:
            self.collect_debug_logs()
        self._switch_to(None)
        self._add(stream, text)

    def _add(self, stream: LogStream, text: str) -> None:
        if not text:
            return
        if self.pending_chars + len(text) > MAX_PENDING:
            self.skipped_lines += max(1, text.count("\n"))
            return
        if self.skipped_lines:
            note, self.skipped_lines = skipped_note(self.skipped_lines), 0
            self._append("internal", note)
        self._append(stream, text)

    def _append(self, stream: LogStream, text: str) -> None:
        if self.pending and self.pending[-1][0] == stream:
            self.pending[-1] = (stream, self.pending[-1][1] + text)
        else:
            self.pending.append((stream, text))
        self.pending_chars += len(text)

    def _switch_to(self, source: str | None) -> None:
        """Say where the next text comes from, when it changes (as `tail` does)."""
        if source != self._current_file:
            self._current_file = source
            self._add("internal", f"==> {source or OUTPUT_HEADER} <==\n")

    def collect_debug_logs(self, *, final: bool = False) -> None:
        """
        Take what the debug log files gained since the last call (complete lines only, unless
        `final`), within the room left; skip the growth beyond MAX_PENDING bytes.
        """
        self._debug_logs_looked_at = time.monotonic()
        if self.debug_log_directory is None:
            return
        try:
            names = sorted(entry.name for entry in os.scandir(self.debug_log_directory))
        except OSError:
            return
        for name in names:
            with contextlib.suppress(OSError):
                self._collect_file(name, final=final)

    def _collect_file(self, name: str, *, final: bool) -> None:
        assert self.debug_log_directory is not None
        path = self.debug_log_directory / name
        offset = self.offsets.get(name, 0)
        size = path.stat().st_size
        if size <= offset:
            return
        if size - offset > MAX_PENDING:
            self._switch_to(name)
            self._add("internal", f"[live log: {size - offset} bytes of {name} skipped]\n")
            self.offsets[name] = size
            return
        room = MAX_PENDING - self.pending_chars
        if room <= 0:
            return
        with path.open("rb") as stream:
            stream.seek(offset)
            data = stream.read(min(size - offset, room))
        if not final and len(data) < MAX_FRAME_TEXT:
            # Wait for the end of a line, unless a line alone would fill a frame.
            end = data.rfind(b"\n") + 1
            data = data[:end]
        if not data:
            return
        self.offsets[name] = offset + len(data)
        self._switch_to(name)
        # A character cut by a full read is completed by the next one.
        decoder = self._file_decoders.setdefault(name, utf8_decoder())
        self._add("stdout", decoder.decode(data, final=final))

    # --- Sending -------------------------------------------------------------------------

    def take_frames(self, limit: int | None = MAX_FRAMES_PER_BATCH) -> list[dict[str, Any]]:
        """Up to `limit` frames (None: all) from the pending text, oldest first."""
        frames: list[dict[str, Any]] = []
        while self.pending and (limit is None or len(frames) < limit):
            stream, text = self.pending[0]
            piece = text[:MAX_FRAME_TEXT]
            if len(text) > MAX_FRAME_TEXT:
                # Cut after the last complete line of the piece, if it has one.
                cut = piece.rfind("\n") + 1
                if cut:
                    piece = piece[:cut]
                self.pending[0] = (stream, text[len(piece) :])
            else:
                self.pending.pop(0)
            self.pending_chars -= len(piece)
            frames.append(log_frame(self.work_request_id, stream, piece))
        if self.skipped_lines and not self.pending and (limit is None or len(frames) < limit):
            note, self.skipped_lines = skipped_note(self.skipped_lines), 0
            frames.append(log_frame(self.work_request_id, "internal", note))
        return frames

    async def send(self, frames: list[dict[str, Any]]) -> bool:
        """Send frames in order; on the first failure, count the rest as skipped."""
        for index, frame in enumerate(frames):
            try:
                await asyncio.wait_for(self.channel.send_live_log_frame(frame), SEND_TIMEOUT)
            except Exception as error:
                lost = sum(max(1, item["data"].count("\n")) for item in frames[index:])
                self.skipped_lines += lost
                logger.debug("live log of work request %d: %s", self.work_request_id, error)
                return False
            self.frames_sent += 1
        return True

    async def send_batch(self) -> None:
        """One batch: gather the debug logs' news and send up to MAX_FRAMES_PER_BATCH frames."""
        if not self.channel.live_log_accepted():
            return  # the websocket is down: the pending text waits (bounded)
        self.collect_debug_logs()
        await self.send(self.take_frames())

    async def run(self) -> None:
        """Send a batch every BATCH_INTERVAL seconds until cancelled."""
        while True:
            await asyncio.sleep(BATCH_INTERVAL)
            try:
                await self.send_batch()
            except Exception as error:  # the live view is best effort, never the task's end
                logger.warning("live log of work request %d: %s", self.work_request_id, error)

    async def finish(self, exit_code: int) -> None:
        """After the task ended: send what is left (at most MAX_PENDING), then the end frame."""
        if not self.channel.live_log_accepted():
            return
        for decoder_stream, decoder in self._decoders.items():
            self._add(decoder_stream, decoder.decode(b"", final=True))  # type: ignore[arg-type]
        self.collect_debug_logs(final=True)
        if await self.send(self.take_frames(limit=None)):
            await self.send([end_frame(self.work_request_id, exit_code)])
