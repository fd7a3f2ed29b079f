"""
How long one provisioner pass takes: many pools, many instances, a long queue.

Creates a throwaway database (migrated) with `--pools` pools (default 100) of
`--instances-per-pool` registered, busy instances each (default 10: 1,000 instances, each
running one work request) and `--pending` pending `sleep` work requests (default 10,000),
then times provisioner passes run in this process, against an in-memory cloud that answers
at once (what is measured is the provisioner's own work: queries and decisions):

- a steady pass: every pool at its maximum, nothing to launch or terminate;
- a pass that launches: every pool's maximum raised by 2 (200 launches);
- a pass after every running work request completed: the queue still covers the capacity.

Target (issue 17): one pass < 200 ms with 100 pools, 1,000 instances, 10,000 pending.

Usage: `.venv/bin/python -m bench.provisioner [--pools 100] [--instances-per-pool 10]
[--pending 10000]`
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from debusine.server.work_requests.sql import COMPLETED, PENDING, RUNNING, SUCCESS

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")

PENDING_SQL = f"""
INSERT INTO db_workrequest (
    workspace_id, created_by_id, created_at, status, result, task_type, task_name, task_data,
    version, priority_base, priority_adjustment, unblock_strategy, workflow_data,
    event_reactions, workflows_need_update
)
SELECT w.id, u.id, now() - make_interval(secs => n), {PENDING}, '', 'Worker', 'sleep',
       '{{"seconds": 60}}', 0, 0, 0, 'deps', '{{}}', '{{}}', false
FROM generate_series(1, %(count)s) AS n, db_workspace AS w, db_user AS u
WHERE w.name = 'System' AND u.username = 'bench'
"""

TOKENS_SQL = """
INSERT INTO db_token (hash, enabled, created_at, last_seen_at, comment)
SELECT md5(%(run)s || n) || md5(n || %(run)s), true, now(), now(), 'bench'
FROM generate_series(1, %(count)s) AS n
"""

# Instance i of the run goes to pool (i mod pools); its instance id is `bench-<token id>`.
WORKERS_SQL = """
INSERT INTO db_worker (
    name, worker_type, registered_at, connected_at, token_id, static_metadata,
    dynamic_metadata, concurrency, worker_pool_id, worker_pool_data, instance_created_at
)
SELECT 'bench-' || t.id, 'external', now(), now(), t.id, '{}',
       '{"sleep:version": 1}', 1, p.id,
       jsonb_build_object('instance_id', 'bench-' || t.id), now() - interval '10 minutes'
FROM db_token t
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS position FROM db_workerpool) p
  ON p.position = t.id %% %(pools)s
WHERE t.comment = 'bench'
"""

RUNNING_SQL = f"""
UPDATE db_workrequest wr SET status = {RUNNING}, worker_id = w.id, started_at = now()
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM db_worker) w,
     (SELECT id, row_number() OVER (ORDER BY id) AS n FROM db_workrequest) q
WHERE wr.id = q.id AND q.n = w.n
"""


@dataclass
class InstantCloud:
    """A cloud that knows the instances the database has, and launches at once."""

    running: dict[str, set[str]] = field(default_factory=dict)  # pool -> instance ids
    launched: int = 0

    def launch(self, request: Any) -> Any:
        from debusine.server.worker_pools.providers.base import LaunchedInstance

        self.launched += 1
        instance_id = f"new-{self.launched}"
        self.running.setdefault(request.pool_name, set()).add(instance_id)
        return LaunchedInstance(instance_id)

    def terminate(self, instance_id: str) -> None:
        for ids in self.running.values():
            ids.discard(instance_id)

    def list_running(self, pool_name: str) -> list[Any]:
        from debusine.server.worker_pools.providers.base import RunningInstance

        return [RunningInstance(i, None) for i in sorted(self.running.get(pool_name, ()))]


def set_up_django(database_url: str) -> None:
    os.environ["DEBUSINE_DATABASE_URL"] = database_url
    os.environ["DEBUSINE_REDIS_URL"] = REDIS_URL
    os.environ["DEBUSINE_REDIS_KEY_PREFIX"] = f"bench-provisioner-{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")
    import django

    django.setup()
    import logging

    # Decisions are logged at INFO, one line per pool: not what is measured.
    logging.getLogger("debusine.server.worker_pools").setLevel(logging.WARNING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--instances-per-pool", type=int, default=10)
    parser.add_argument("--pending", type=int, default=10_000)
    args = parser.parse_args()

    from debusine.server.project import instance
    from debusine.testing.embedded import drop_database, ensure_database_exists

    name = f"bench_provisioner_{uuid.uuid4().hex[:8]}"
    database_url = instance.with_database_name(POSTGRES_URL, name)
    ensure_database_exists(database_url)
    try:
        set_up_django(database_url)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        run(database_url, args.pools, args.instances_per_pool, args.pending)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(database_url)


def timed_pass(label: str, cloud: InstantCloud) -> float:
    from debusine.server.worker_pools.provisioner import run_provisioner_pass

    before = cloud.launched
    started = time.perf_counter()
    report = run_provisioner_pass(provider_factory=lambda _pool: cloud)
    seconds = time.perf_counter() - started
    terminated = sum(sum(pool.terminated.values()) for pool in report.pools)
    print(
        f"{label:58} {seconds * 1000:7.1f} ms  {cloud.launched - before:4d} launched "
        f"{terminated:4d} terminated",
        flush=True,
    )
    return seconds


def profile_pass(cloud: InstantCloud) -> None:
    """A warm pass under cProfile, with each SQL statement's time (BENCH_PROFILE=1)."""
    import cProfile
    import pstats
    from collections.abc import Callable

    from django.db import connection

    statements: list[tuple[float, str]] = []

    def timed(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, *args)
        finally:
            statements.append((time.perf_counter() - started, " ".join(sql.split())[:90]))

    profile = cProfile.Profile()
    with connection.execute_wrapper(timed):
        profile.enable()
        timed_pass("profiled (warm)", cloud)
        profile.disable()
    print(f"{len(statements)} SQL statements, {sum(s for s, _ in statements) * 1000:.1f} ms:")
    for seconds, text in sorted(statements, reverse=True)[:8]:
        print(f"  {seconds * 1000:7.1f} ms  {text}")
    pstats.Stats(profile).sort_stats("cumtime").print_stats(25)


def run(database_url: str, pools: int, per_pool: int, pending: int) -> None:
    from debusine.server.db.models import Asset, AssetCategory, User, WorkerPool

    User.objects.create_user("bench", "bench@example.org")
    account = Asset.objects.create(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
        data={"provider_type": "local", "name": "bench", "configuration": {}, "credentials": {}},
    )
    WorkerPool.objects.bulk_create(
        WorkerPool(
            name=f"pool-{n:03d}",
            provider_account=account,
            architectures=["amd64"],
            specifications={"provider_type": "local", "api_url": "http://127.0.0.1:1/api"},
            limits={"max_active_instances": per_pool, "max_idle_seconds": 3600},
        )
        for n in range(pools)
    )
    instances = pools * per_pool
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(PENDING_SQL, {"count": pending + instances})
        connection.execute(TOKENS_SQL, {"count": instances, "run": uuid.uuid4().hex})
        connection.execute(WORKERS_SQL, {"pools": pools})
        connection.execute(RUNNING_SQL)
        cloud = InstantCloud()
        for pool_name, instance_id in connection.execute(
            "SELECT p.name, w.worker_pool_data->>'instance_id' FROM db_worker w "
            "JOIN db_workerpool p ON p.id = w.worker_pool_id"
        ).fetchall():
            cloud.running.setdefault(pool_name, set()).add(instance_id)
        connection.execute("ANALYZE")

        print(f"{pools} pools, {instances} busy instances, {pending} pending work requests")
        print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
        timed_pass("pass 1: every pool at its maximum", cloud)
        if os.environ.get("BENCH_PROFILE"):
            profile_pass(cloud)
        timed_pass("pass 2: the same again (warm)", cloud)
        connection.execute(
            "UPDATE db_workerpool SET limits = jsonb_set(limits, '{max_active_instances}', "
            "to_jsonb((limits->>'max_active_instances')::int + 2))"
        )
        timed_pass(f"pass 3: every maximum raised by 2 ({2 * pools} launches)", cloud)
        connection.execute(
            f"UPDATE db_workrequest SET status = {COMPLETED}, result = {SUCCESS}, "
            f"completed_at = now() WHERE status = {RUNNING}"
        )
        timed_pass("pass 4: every running work request completed", cloud)


if __name__ == "__main__":
    main()
