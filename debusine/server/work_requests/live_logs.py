"""
Live logs of running work requests: the `log_data` / `log_data_end` frames a worker streams on
its websocket while a task runs (Debusine 0.16 workers do; protocol-versions.md §1.3).

Ephemeral by design, like everything kept in Redis: losing Redis loses only the live view; the
worker's debug-log artifact stays the durable record. One list per work request
(`<prefix>:live-log:<id>`) holds each frame as JSON in arrival order and is forgotten EXPIRY
after its last frame. Positions never move, so that readers can follow by position: past
MAX_FRAMES the log gets one `internal` note saying it was cut, then only its end frame.

Two readers: the API's `work-request/<id>/live-log/?after=N` (whole frames, for
`debusine show-work-request --follow`) and the web UI's work request page (`read_page`:
stream and text only, and whether the end was seen).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings

from debusine.server.redis_clients import shared_client

#: Frames kept per work request (the worker queues at most 1000 at a time).
MAX_FRAMES = 20_000
#: How long a log is kept after its last frame, in seconds.
EXPIRY = 24 * 3600
#: Frames answered per read.
PAGE = 1000
#: Longest text of one frame kept, in characters.
MAX_TEXT = 64 * 1024

STREAMS = frozenset({"stdout", "stderr", "internal"})
TRUNCATED_NOTE = "[live log truncated: see the work request's final log]\n"


def redis_client() -> redis.Redis:
    return shared_client(timeout=5)


def key(work_request_id: int) -> str:
    return f"{settings.DEBUSINE_REDIS_KEY_PREFIX}:live-log:{work_request_id}"


def frame_to_store(frame: Any) -> dict[str, Any] | None:
    """The frame as stored, or None when it is not a well-formed log frame."""
    if not isinstance(frame, dict) or frame.get("type") not in ("log_data", "log_data_end"):
        return None
    work_request_id = frame.get("work_request_id")
    if not isinstance(work_request_id, int) or isinstance(work_request_id, bool):
        return None
    timestamp = frame.get("timestamp")
    stored: dict[str, Any] = {
        "type": frame["type"],
        "work_request_id": work_request_id,
        "timestamp": (timestamp if isinstance(timestamp, str) else datetime.now(UTC).isoformat()),
    }
    if frame["type"] == "log_data":
        stream, data = frame.get("stream"), frame.get("data")
        if not isinstance(data, str):
            return None
        stored.update(stream=stream if stream in STREAMS else "stdout", data=data[:MAX_TEXT])
    else:
        exit_code = frame.get("exit_code")
        stored["exit_code"] = exit_code if isinstance(exit_code, int) else None
    return stored


def append(frame: dict[str, Any]) -> None:
    """Store one frame (from `frame_to_store`) at the end of its work request's log."""
    name = key(frame["work_request_id"])
    client = redis_client()
    pipeline = client.pipeline()
    pipeline.rpush(name, json.dumps(frame))
    pipeline.expire(name, EXPIRY)
    length, _expiry = pipeline.execute()
    if frame["type"] != "log_data" or length <= MAX_FRAMES:
        return
    if length == MAX_FRAMES + 1:
        note = {**frame, "stream": "internal", "data": TRUNCATED_NOTE}
        client.lset(name, -1, json.dumps(note))
    else:
        # Frames are appended one at a time per work request (its worker's websocket).
        client.rpop(name)


def record_frame(worker_id: int, frame: Any, running_here: dict[int, bool]) -> None:
    """
    Keep a log frame of a worker's websocket if it is about a work request of that worker
    (running, or just completed by it: the end frame may come after the report); ignore
    anything else. `running_here` remembers the answer per work request (the
    database is asked once per work request, not once per frame).
    """
    from debusine.server.db.models import WorkRequest

    stored = frame_to_store(frame)
    if stored is None:
        return
    work_request_id = stored["work_request_id"]
    if work_request_id not in running_here:
        if len(running_here) > 100:
            running_here.clear()
        running_here[work_request_id] = WorkRequest.objects.filter(
            pk=work_request_id, worker_id=worker_id
        ).exists()
    if running_here[work_request_id]:
        append(stored)


def read(work_request_id: int, after: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Up to PAGE frames from position `after` (0: the first), and the next position."""
    raw = redis_client().lrange(key(work_request_id), after, after + PAGE - 1)
    frames = [json.loads(item) for item in raw]
    return frames, after + len(frames)


@dataclass
class LiveLogPage:
    """What the web UI's page shows of one read."""

    pieces: list[dict[str, str]]
    next_offset: int
    ended: bool


def read_page(work_request_id: int, offset: int) -> LiveLogPage:
    """The text pieces from position `offset` on, and whether the worker said it ended."""
    frames, next_offset = read(work_request_id, offset)
    pieces = [
        {"stream": frame["stream"], "data": frame["data"]}
        for frame in frames
        if frame["type"] == "log_data"
    ]
    ended = any(frame["type"] == "log_data_end" for frame in frames)
    if not frames:
        # A reader already past the end frame (a later poll) is told it ended too.
        last = redis_client().lindex(key(work_request_id), -1)
        ended = last is not None and json.loads(last)["type"] == "log_data_end"
    return LiveLogPage(pieces, next_offset, ended)
