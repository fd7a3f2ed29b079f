"""
How fast the scheduler assigns work: one pass with many pending work requests and idle workers.

Creates a throwaway database (migrated), inserts `--pending` pending noop work requests (default
10,000) and `--workers` connected, enabled, idle workers (default 1,000; database rows, no
processes), then times scheduling passes run in this process:

- the first pass, which assigns one work request to every idle worker (its duration, and
  assignments per second), with and without sending the `work_request_available` notifications
  through Redis;
- a pass with every worker busy (the cost of finding nothing to do);
- a pass where only a tenth of the workers can run the queued task (workers with a deny list),
  so the pass must look past unrunnable work.

Targets (issue 3): >= 1,000 assignments/s, one pass < 250 ms.

Usage: `.venv/bin/python -m bench.schedule [--pending 10000] [--workers 1000]`
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import psycopg

from debusine.server.work_requests.sql import COMPLETED, PENDING, SUCCESS

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")

PENDING_SQL = f"""
INSERT INTO db_workrequest (
    workspace_id, created_by_id, created_at, status, result, task_type, task_name, task_data,
    version, priority_base, priority_adjustment, unblock_strategy, workflow_data,
    event_reactions, workflows_need_update
)
SELECT w.id, u.id, now() - make_interval(secs => n), {PENDING}, '', 'Worker', 'noop',
       '{{"result": true}}', 0, n %% 3, 0, 'deps', '{{}}', '{{}}', false
FROM generate_series(1, %(count)s) AS n, db_workspace AS w, db_user AS u
WHERE w.name = 'System' AND u.username = 'bench'
"""

TOKENS_SQL = """
INSERT INTO db_token (hash, enabled, created_at, last_seen_at, comment)
SELECT md5(%(run)s || n) || md5(n || %(run)s), true, now(), now(), 'bench'
FROM generate_series(1, %(count)s) AS n
"""

WORKERS_SQL = """
INSERT INTO db_worker (
    name, worker_type, registered_at, connected_at, token_id, static_metadata,
    dynamic_metadata, concurrency, worker_pool_data
)
SELECT 'bench-' || t.id, 'external', now(), now() + make_interval(secs => t.id), t.id, '{}',
       jsonb_build_object(
           'noop:version', 1, 'sleep:version', 1, 'system:cpu_count', 2,
           'system:architectures', jsonb_build_array('amd64', 'i386'),
           'system:host_architecture', 'amd64', 'executor:unshare:available', true
       ),
       1, '{}'
FROM db_token t WHERE t.comment = 'bench'
"""


def set_up_django(database_url: str) -> None:
    os.environ["DEBUSINE_DATABASE_URL"] = database_url
    os.environ["DEBUSINE_REDIS_URL"] = REDIS_URL
    os.environ["DEBUSINE_REDIS_KEY_PREFIX"] = f"bench-schedule-{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")
    import django

    django.setup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1_000)
    args = parser.parse_args()

    from debusine.server.project import instance
    from debusine.testing.embedded import drop_database, ensure_database_exists

    name = f"bench_schedule_{uuid.uuid4().hex[:8]}"
    database_url = instance.with_database_name(POSTGRES_URL, name)
    ensure_database_exists(database_url)
    try:
        set_up_django(database_url)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        run(database_url, args.pending, args.workers)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(database_url)


def timed_pass(label: str, renotify: bool = False, notify: bool = True) -> float:
    from debusine.server.scheduler import passes
    from debusine.server.work_requests import notifications

    original = notifications.notify_work_request_assigned
    if not notify:
        notifications.notify_work_request_assigned = lambda worker_ids, delay=0.0: None
    try:
        started = time.perf_counter()
        result = passes.run_scheduling_pass(renotify=renotify)
        seconds = time.perf_counter() - started
    finally:
        notifications.notify_work_request_assigned = original
    assigned = len(result.assigned)
    rate = f"{assigned / seconds:9.0f} assignments/s" if assigned else " " * 23
    print(
        f"{label:58} {seconds * 1000:7.1f} ms  {assigned:5d} assigned {rate}"
        f"  ({result.candidates_seen} candidates read)",
        flush=True,
    )
    return seconds


def run(database_url: str, pending: int, workers: int) -> None:
    from debusine.server.db.models import User

    User.objects.create_user("bench", "bench@example.org")
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(PENDING_SQL, {"count": pending})
        connection.execute(TOKENS_SQL, {"count": workers, "run": uuid.uuid4().hex})
        connection.execute(WORKERS_SQL)
        connection.execute("ANALYZE")

        print(f"{pending} pending work requests, {workers} idle workers (2 cores)")
        timed_pass(f"pass 1: assign {workers} (notifications not sent)", notify=False)
        connection.execute(f"UPDATE db_workrequest SET worker_id = NULL WHERE status = {PENDING}")
        timed_pass(f"pass 2: assign {workers} again, notifying through Redis")
        timed_pass("pass 3: every worker busy")
        timed_pass("pass 4: every worker busy, fallback re-notification", renotify=True)
        # Complete what was assigned; nine workers in ten refuse noop from now on.
        connection.execute(
            f"UPDATE db_workrequest SET status = {COMPLETED}, result = {SUCCESS}, "
            "completed_at = now() WHERE worker_id IS NOT NULL"
        )
        connection.execute(
            'UPDATE db_worker SET static_metadata = \'{"tasks_denylist": ["noop"]}\' '
            "WHERE id % 10 <> 0"
        )
        timed_pass(f"pass 5: only {workers // 10} of {workers} workers can run the queue")
        timed_pass("pass 6: nothing runnable left for the idle workers")


if __name__ == "__main__":
    main()
