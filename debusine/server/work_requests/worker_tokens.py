"""
The one resolver of a worker token: which worker a `Token` key authenticates.

A key authenticates a worker when its token is enabled, has not expired, belongs to no user
(a worker token never acts as a user, nor a user token as a worker) and is the token of a
worker. Resolving it also renews the worker's lease (the token's `last_seen_at`, at most every
LAST_SEEN_RESOLUTION). The worker's REST calls (`debusine.server.api.auth` and the hot-path
views) and its websocket resolve keys here, with one statement.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from debusine.server.db.models.auth import LAST_SEEN_RESOLUTION, hash_token_key

WORKER_BY_KEY_SQL = """
SELECT w.id, w.name, w.concurrency, t.id,
       t.last_seen_at IS NULL OR t.last_seen_at < now() - %s * interval '1 second'
FROM db_token t JOIN db_worker w ON w.token_id = t.id
WHERE t.hash = %s AND t.enabled AND t.user_id IS NULL
  AND (t.expire_at IS NULL OR t.expire_at > now())
"""


@dataclass(frozen=True)
class WorkerCaller:
    """The worker behind a request's token."""

    id: int
    name: str
    concurrency: int


def resolve_worker_token(key: str | None) -> WorkerCaller | None:
    """The worker whose usable token is `key` (surrounding blanks ignored), or None."""
    key = (key or "").strip()
    if not key:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            WORKER_BY_KEY_SQL, [LAST_SEEN_RESOLUTION.total_seconds(), hash_token_key(key)]
        )
        row = cursor.fetchone()
        if row is None:
            return None
        worker_id, name, concurrency, token_id, stale = row
        if stale:
            cursor.execute("UPDATE db_token SET last_seen_at = now() WHERE id = %s", [token_id])
    return WorkerCaller(worker_id, name, concurrency)
