"""
Live logs of running work requests: the `log_data` / `log_data_end` frames a Debusine 0.16
worker sends on its websocket while a task runs (protocol-versions.md §1.3).

They are ephemeral, like everything kept in Redis: one list per work request,
`debusine:live-log:<id>`, holding each frame as JSON in arrival order, capped at MAX_FRAMES
(the oldest dropped) and forgotten EXPIRY after the last frame. The worker's debug-log
artifact stays the durable record. Readers page through it by position (`read(id, after)`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis.asyncio
from django.conf import settings

from debusine.server.metrics.events import redis_client

#: Frames kept per work request (the worker queues at most 1000 at a time).
MAX_FRAMES = 20_000
#: How long a log is kept after its last frame, in seconds.
EXPIRY = 24 * 3600
#: Frames answered per read.
PAGE = 1000
#: Longest text of one frame kept, in characters.
MAX_TEXT = 64 * 1024


def key(work_request_id: int) -> str:
    return f"debusine:live-log:{work_request_id}"


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
        "timestamp": timestamp if isinstance(timestamp, str) else datetime.now().isoformat(),
    }
    if frame["type"] == "log_data":
        stream, data = frame.get("stream"), frame.get("data")
        if stream not in ("stdout", "stderr", "internal") or not isinstance(data, str):
            return None
        stored.update(stream=stream, data=data[:MAX_TEXT])
    else:
        exit_code = frame.get("exit_code")
        stored["exit_code"] = exit_code if isinstance(exit_code, int) else None
    return stored


_async_client: redis.asyncio.Redis | None = None


def async_client() -> redis.asyncio.Redis:
    global _async_client
    if _async_client is None:
        _async_client = redis.asyncio.Redis.from_url(
            settings.DEBUSINE_REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
    return _async_client


async def append(frame: dict[str, Any]) -> None:
    """Store one frame (from `frame_to_store`) at the end of its work request's log."""
    name = key(frame["work_request_id"])
    async with async_client().pipeline(transaction=True) as pipe:
        pipe.rpush(name, json.dumps(frame))
        pipe.ltrim(name, -MAX_FRAMES, -1)
        pipe.expire(name, EXPIRY)
        await pipe.execute()


def read(work_request_id: int, after: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Up to PAGE frames from position `after` (0: the first kept), and the next position."""
    raw = redis_client().lrange(key(work_request_id), after, after + PAGE - 1)
    frames = [json.loads(item) for item in raw]
    return frames, after + len(frames)
