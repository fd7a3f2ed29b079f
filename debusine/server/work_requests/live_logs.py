"""
The live log of a running work request: what its worker streams in `log_data` frames (Debusine
0.16 workers send them over the worker websocket; protocol-versions.md), kept in Redis for the
web UI to follow, until a day after the last piece.

Ephemeral by design: losing Redis loses only the live view; the logs themselves reach the
server as the work request's debug-log artifact when it ends. One list per work request, of
JSON pieces `{"stream", "data"}`, capped at LIVE_LOG_MAX_PIECES (later pieces are dropped and
the log says so); `log_data_end` sets an end marker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from django.conf import settings

#: Pieces kept per work request; seconds the log stays after its last piece.
LIVE_LOG_MAX_PIECES = 20_000
LIVE_LOG_TTL = 24 * 3600
#: Longest piece kept (a frame's `data` beyond it is cut).
MAX_PIECE_SIZE = 64 * 1024
#: Pieces handed to one reader at once.
READ_BATCH = 2_000

STREAMS = frozenset({"stdout", "stderr", "internal"})


@cache
def redis_client() -> redis.Redis:
    """One Redis client (with its connection pool) per process, as the scheduler's triggers."""
    return redis.Redis.from_url(settings.DEBUSINE_REDIS_URL, socket_timeout=5)


def log_key(work_request_id: int) -> str:
    return f"{settings.DEBUSINE_REDIS_KEY_PREFIX}:live-log:{work_request_id}"


def end_key(work_request_id: int) -> str:
    return f"{settings.DEBUSINE_REDIS_KEY_PREFIX}:live-log-end:{work_request_id}"


def append(work_request_id: int, stream: str, data: str) -> None:
    """Add one piece of a work request's output (beyond the cap, a note once, then nothing)."""
    client = redis_client()
    key = log_key(work_request_id)
    length = client.llen(key)
    if length > LIVE_LOG_MAX_PIECES:
        return
    if length == LIVE_LOG_MAX_PIECES:
        piece = {"stream": "internal", "data": "[live log truncated: see the final log]\n"}
    else:
        piece = {
            "stream": stream if stream in STREAMS else "stdout",
            "data": data[:MAX_PIECE_SIZE],
        }
    pipeline = client.pipeline()
    pipeline.rpush(key, json.dumps(piece))
    pipeline.expire(key, LIVE_LOG_TTL)
    pipeline.execute()


def mark_ended(work_request_id: int, exit_code: Any) -> None:
    redis_client().set(end_key(work_request_id), json.dumps(exit_code), ex=LIVE_LOG_TTL)


@dataclass
class LiveLogPage:
    pieces: list[dict[str, str]]
    next_offset: int
    ended: bool


def read(work_request_id: int, offset: int) -> LiveLogPage:
    """The pieces from `offset` on (at most READ_BATCH), and whether the worker said "end"."""
    client = redis_client()
    pipeline = client.pipeline()
    pipeline.lrange(log_key(work_request_id), offset, offset + READ_BATCH - 1)
    pipeline.exists(end_key(work_request_id))
    raw, ended = pipeline.execute()
    pieces = [json.loads(item) for item in raw]
    return LiveLogPage(pieces, offset + len(pieces), bool(ended))


def record_frame(worker_id: int, frame: dict[str, Any], running_here: dict[int, bool]) -> None:
    """
    Keep a `log_data` or `log_data_end` frame of the worker's websocket, if it is about a work
    request running on that worker (`running_here` remembers the answer per work request, so
    the database is asked once per work request, not once per frame). Others are ignored.
    """
    from debusine.protocol.work_requests import WorkRequestStatus
    from debusine.server.db.models import WorkRequest

    work_request_id = frame.get("work_request_id")
    if not isinstance(work_request_id, int) or isinstance(work_request_id, bool):
        return
    if work_request_id not in running_here:
        running_here[work_request_id] = WorkRequest.objects.filter(
            pk=work_request_id, worker_id=worker_id, status=WorkRequestStatus.RUNNING
        ).exists()
    if not running_here[work_request_id]:
        return
    if frame.get("type") == "log_data":
        data = frame.get("data")
        if isinstance(data, str):
            append(work_request_id, str(frame.get("stream", "stdout")), data)
    elif frame.get("type") == "log_data_end":
        mark_ended(work_request_id, frame.get("exit_code"))
