"""
The one resolver of a worker token: which worker a `Token` key authenticates.

A key authenticates a worker when its token is enabled, has not expired, belongs to no user
(a worker token never acts as a user, nor a user token as a worker) and is the token of a
worker, or the task token of a work request assigned to that worker (what a Debusine 0.16
worker's task authenticates with: see `mint_task_token`). Resolving it also renews the
worker's lease (the token's `last_seen_at`, at most every
LAST_SEEN_RESOLUTION). The worker's REST calls (`debusine.server.api.auth` and the hot-path
views) and its websocket resolve keys here, with one statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from debusine.server.db.models import Token, WorkRequest
from debusine.server.db.models.auth import LAST_SEEN_RESOLUTION, hash_token_key

WORKER_BY_KEY_SQL = """
SELECT w.id, w.name, w.concurrency, t.id,
       t.last_seen_at IS NULL OR t.last_seen_at < now() - %(seen)s * interval '1 second',
       NULL::bigint
FROM db_token t JOIN db_worker w ON w.token_id = t.id
WHERE t.hash = %(hash)s AND t.enabled AND t.user_id IS NULL
  AND (t.expire_at IS NULL OR t.expire_at > now())
UNION ALL
SELECT w.id, w.name, w.concurrency, t.id,
       t.last_seen_at IS NULL OR t.last_seen_at < now() - %(seen)s * interval '1 second',
       wr.id
FROM db_token t JOIN db_workrequest wr ON wr.task_token_id = t.id
JOIN db_worker w ON w.id = wr.worker_id
WHERE t.hash = %(hash)s AND t.enabled AND t.user_id IS NULL
  AND (t.expire_at IS NULL OR t.expire_at > now())
LIMIT 1
"""
#: How long the token a 0.16 worker's task gets stays valid at most (as Debusine's).
TASK_TOKEN_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class WorkerCaller:
    """The worker behind a request's token."""

    id: int
    name: str
    concurrency: int
    #: Set when the key is the task token of this work request (not the worker's own).
    task_of_work_request: int | None = None


def resolve_worker_token(key: str | None) -> WorkerCaller | None:
    """The worker whose usable token is `key` (surrounding blanks ignored), or None."""
    key = (key or "").strip()
    if not key:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            WORKER_BY_KEY_SQL,
            {"seen": LAST_SEEN_RESOLUTION.total_seconds(), "hash": hash_token_key(key)},
        )
        row = cursor.fetchone()
        if row is None:
            return None
        worker_id, name, concurrency, token_id, stale, work_request_id = row
        if stale:
            cursor.execute("UPDATE db_token SET last_seen_at = now() WHERE id = %s", [token_id])
    return WorkerCaller(worker_id, name, concurrency, work_request_id)


def mint_task_token(work_request_id: int, worker_name: str) -> str:
    """
    A new token for the task of a work request a Debusine 0.16 worker was just handed: it
    authenticates as that worker, expires after TASK_TOKEN_LIFETIME, and replaces any earlier
    one of the work request. Only its hash is stored; the key is returned.
    """
    token, key = Token.objects.create_with_key(
        enabled=True,
        expire_at=timezone.now() + TASK_TOKEN_LIFETIME,
        comment=f"Task of work request {work_request_id} on {worker_name}"[:100],
    )
    Token.objects.filter(task_of_work_request__pk=work_request_id).delete()
    WorkRequest.objects.filter(pk=work_request_id).update(task_token=token)
    return key


def revoke_task_token(work_request_id: int) -> None:
    """Delete the task token of a work request (it completed)."""
    Token.objects.filter(task_of_work_request__pk=work_request_id).delete()
