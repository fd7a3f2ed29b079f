"""
The worker's hot path as single SQL statements: who is calling, take the next work request,
report a completion (and assign the worker its next work request in the same transaction).

Every work request a worker runs costs a get-next and a completion call, so these run as one
or two statements each instead of ORM round trips. They make the same state changes as the
`WorkRequest` action methods (`mark_running`, `mark_completed`), whose rules they follow; the
rare cases with more to do (a restarted worker's lost work, dependants to unblock, reactions
to a success to run) go through those methods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from django.db import connection

from debusine.protocol.wire import iso_datetime
from debusine.server.db.models.auth import LAST_SEEN_RESOLUTION, hash_token_key

CALLER_SQL = """
SELECT w.id, w.name, w.concurrency, t.id,
       t.last_seen_at IS NULL OR t.last_seen_at < now() - %s * interval '1 second'
FROM db_token t JOIN db_worker w ON w.token_id = t.id
WHERE t.hash = %s AND t.enabled AND t.user_id IS NULL
  AND (t.expire_at IS NULL OR t.expire_at > now())
"""

RUNNING_COUNT_SQL = """
SELECT count(*) FROM db_workrequest WHERE worker_id = %s AND status = 'running'
"""

# Take the worker's first pending work request (queue order) and start it, in one statement.
START_NEXT_SQL = """
WITH next AS (
    SELECT id FROM db_workrequest
    WHERE worker_id = %(worker)s AND status = 'pending'
      -- Not while the worker runs as much as it can: then it has restarted (the caller checks).
      AND (SELECT count(*) FROM db_workrequest r
           WHERE r.worker_id = %(worker)s AND r.status = 'running') < %(concurrency)s
    ORDER BY priority_base + priority_adjustment DESC, created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE db_workrequest wr SET status = 'running', started_at = now()
FROM next, db_workspace ws, db_scope sc
WHERE wr.id = next.id AND ws.id = wr.workspace_id AND sc.id = ws.scope_id
RETURNING wr.id, wr.task_name, wr.created_at, wr.created_by_id, wr.aborted_by_id,
          wr.task_type, wr.task_data, wr.configured_task_data, wr.dynamic_task_data,
          wr.priority_base, wr.priority_adjustment, wr.workflow_data, wr.event_reactions,
          sc.name, ws.name,
          ARRAY(SELECT a.id FROM db_artifact a WHERE a.created_by_work_request_id = wr.id
                ORDER BY a.id)
"""

# Record the outcome if the work request is still the worker's and unfinished; say whether
# other work requests depend on it, and whether it has reactions to its success.
COMPLETE_SQL = """
UPDATE db_workrequest wr
SET status = 'completed', result = %(result)s, completed_at = now(),
    started_at = COALESCE(wr.started_at, now()),
    output_data = CASE WHEN %(output)s::jsonb IS NULL THEN wr.output_data
                       ELSE COALESCE(wr.output_data, '{}'::jsonb) || %(output)s::jsonb END
WHERE wr.id = %(id)s AND wr.worker_id = %(worker)s AND wr.status IN ('pending', 'running')
RETURNING EXISTS (
    SELECT 1 FROM db_workrequest_dependencies d WHERE d.to_workrequest_id = wr.id
), wr.workspace_id, (SELECT ws.scope_id FROM db_workspace ws WHERE ws.id = wr.workspace_id),
wr.completed_at,
%(result)s = 'success' AND COALESCE(wr.event_reactions->'on_success', '[]'::jsonb) <> '[]'::jsonb
"""


@dataclass(frozen=True)
class WorkerCaller:
    """The worker behind a request's token."""

    id: int
    name: str
    concurrency: int


def worker_for_token_key(key: str) -> WorkerCaller | None:
    """
    The worker whose usable token is `key`, or None; renews its lease (the token's
    `last_seen_at`, at most every LAST_SEEN_RESOLUTION).
    """
    with connection.cursor() as cursor:
        cursor.execute(CALLER_SQL, [LAST_SEEN_RESOLUTION.total_seconds(), hash_token_key(key)])
        row = cursor.fetchone()
        if row is None:
            return None
        worker_id, name, concurrency, token_id, stale = row
        if stale:
            cursor.execute("UPDATE db_token SET last_seen_at = now() WHERE id = %s", [token_id])
    return WorkerCaller(worker_id, name, concurrency)


def _json(value: Any) -> Any:
    # Django has psycopg hand JSON columns over as text.
    return json.loads(value) if isinstance(value, str) else value


def running_count(worker_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(RUNNING_COUNT_SQL, [worker_id])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def start_next_work_request(worker_id: int, concurrency: int) -> dict[str, Any] | None:
    """
    Start the worker's next assigned work request; return its WorkRequest object as it was
    before it started (protocol.md §2.1: `status: pending`, `started_at: null`), with the
    configured task data when there is one. None when the worker has nothing assigned, or
    already runs `concurrency` work requests.
    """
    with connection.cursor() as cursor:
        cursor.execute(START_NEXT_SQL, {"worker": worker_id, "concurrency": concurrency})
        row = cursor.fetchone()
    if row is None:
        return None
    (
        work_request_id,
        task_name,
        created_at,
        created_by,
        aborted_by,
        task_type,
        task_data,
        configured_task_data,
        dynamic_task_data,
        priority_base,
        priority_adjustment,
        workflow_data,
        event_reactions,
        scope_name,
        workspace_name,
        artifact_ids,
    ) = row
    return {
        "id": work_request_id,
        "url": f"/{scope_name}/{workspace_name}/work-request/{work_request_id}/",
        "task_name": task_name,
        "created_at": iso_datetime(created_at),
        "created_by": created_by,
        "aborted_by": aborted_by,
        "started_at": None,
        "completed_at": None,
        "duration": None,
        "worker": worker_id,
        "task_type": task_type,
        "task_data": _json(configured_task_data) or _json(task_data) or {},
        "dynamic_task_data": _json(dynamic_task_data),
        "priority_base": priority_base,
        "priority_adjustment": priority_adjustment,
        "workflow_data": _json(workflow_data) or {},
        "event_reactions": _json(event_reactions) or {},
        "status": "pending",
        "result": "",
        "artifacts": list(artifact_ids),
        "scope": scope_name,
        "workspace": workspace_name,
    }


class Completion(Enum):
    """What a worker's completion report did."""

    RECORDED = "recorded"
    STALE = "stale"  # no longer pending or running: nothing changed
    NOT_ASSIGNED = "not-assigned"  # pending or running on another worker (or none)
    NOT_FOUND = "not-found"


def complete_work_request(
    worker_id: int, work_request_id: int, result: str, output_data: dict[str, Any] | None
) -> Completion:
    """Record a worker's report on its work request (see `WorkRequest.mark_completed`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            COMPLETE_SQL,
            {
                "result": result,
                "output": None if output_data is None else json.dumps(output_data),
                "id": work_request_id,
                "worker": worker_id,
            },
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute(
                "SELECT status FROM db_workrequest WHERE id = %s FOR SHARE", [work_request_id]
            )
            current = cursor.fetchone()
            if current is None:
                return Completion.NOT_FOUND
            if current[0] in ("pending", "running"):
                return Completion.NOT_ASSIGNED
            return Completion.STALE
    has_dependants, has_success_reactions = bool(row[0]), bool(row[4])
    workspace_id, scope_id, completed_at = row[1], row[2], row[3]
    if has_dependants or has_success_reactions:
        from debusine.server.db.models.work_requests import WorkRequest

        completed = WorkRequest.objects.select_related("workspace", "created_by").get(
            pk=work_request_id
        )
        if has_dependants:
            completed.update_reverse_dependencies()
        if has_success_reactions:
            completed.process_event_reactions("on_success")
    # The worker is free again: give it its next work request now, in this transaction (and
    # tell it), rather than queue a pass for the scheduler. Nothing else became runnable,
    # except dependants, which `update_reverse_dependencies` queued a pass for.
    from debusine.server.scheduler.passes import run_scheduling_pass

    run_scheduling_pass(for_worker=worker_id)
    from debusine.server.db.models.work_requests import announce_completion

    # For `on-completed` websocket listeners, once this commits.
    announce_completion(work_request_id, scope_id, workspace_id, completed_at, result)
    return Completion.RECORDED
