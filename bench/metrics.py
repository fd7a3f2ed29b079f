"""
What one `open-metrics` scrape costs on a large instance, and what the counting triggers cost
the work request's transitions.

Creates a throwaway database (migrated), inserts `--work-requests` work requests (default
1,000,000: several tasks, architectures and statuses, with start and completion times),
`--artifacts` artifacts (default 100,000) and `--workers` workers (default 1,000) with
generate_series, then prints:

- one scrape (`debusine.server.metrics.exposition.render`, what the view runs): the first one,
  which folds the deltas of the bulk insert, then the median and worst of `--scrapes` more;
- the baseline it avoids, measured in the same run: counting the work requests with a
  full-table GROUP BY (task, status, architecture), and the ratio;
- what recording an event (one request's latency) costs a request, and writing them to Redis;
- the triggers' cost on transitions: `--updates` single-row status changes, each its own
  transaction, with the counting triggers enabled and then disabled (and the ratio).

Target (issue 18): one scrape < 100 ms with 10^6 work requests. The machine is shared: read
absolute numbers with care, ratios are measured in the same run.

Usage: `.venv/bin/python -m bench.metrics [--work-requests 1000000] [--scrapes 20]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import psycopg

from debusine.server.work_requests.sql import COMPLETED, PENDING, RUNNING, SUCCESS

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")

# Nine in ten completed, the rest pending or running; four tasks, three architectures.
WORK_REQUESTS_SQL = f"""
INSERT INTO db_workrequest (
    workspace_id, created_by_id, created_at, started_at, completed_at, status, result,
    task_type, task_name, task_data, version, priority_base, priority_adjustment,
    unblock_strategy, workflow_data, event_reactions, workflows_need_update
)
SELECT w.id, u.id, now() - make_interval(secs => n),
       CASE WHEN n %% 10 = 0 THEN NULL ELSE now() - make_interval(secs => n) + interval '30 s' END,
       CASE WHEN n %% 10 < 2 THEN NULL ELSE now() - make_interval(secs => n) + interval '90 s' END,
       CASE WHEN n %% 10 = 0 THEN {PENDING} WHEN n %% 10 = 1 THEN {RUNNING} ELSE {COMPLETED} END,
       CASE WHEN n %% 10 < 2 THEN '' ELSE {SUCCESS} END,
       'Worker', (ARRAY['noop', 'sbuild', 'lintian', 'autopkgtest'])[n %% 4 + 1],
       jsonb_build_object('host_architecture', (ARRAY['amd64', 'arm64', 'i386'])[n %% 3 + 1]),
       0, 0, 0, 'deps', '{{}}', '{{}}', false
FROM generate_series(1, %(count)s) AS n, db_workspace AS w, db_user AS u
WHERE w.name = 'System' AND u.username = 'bench'
"""

ARTIFACTS_SQL = """
INSERT INTO db_artifact (category, workspace_id, data, created_at, created_by_id)
SELECT (ARRAY['debian:source-package', 'debian:binary-package', 'debian:upload'])[n %% 3 + 1],
       w.id, '{}', now(), u.id
FROM generate_series(1, %(count)s) AS n, db_workspace AS w, db_user AS u
WHERE w.name = 'System' AND u.username = 'bench'
"""

WORKERS_SQL = """
INSERT INTO db_worker (name, worker_type, registered_at, connected_at, static_metadata,
                       dynamic_metadata, concurrency, worker_pool_data)
SELECT 'bench-' || n, 'external', now(), CASE WHEN n %% 2 = 0 THEN now() END, '{}',
       jsonb_build_object('system:architectures', jsonb_build_array('amd64', 'i386'),
                          'system:host_architecture', 'amd64'),
       1, '{}'
FROM generate_series(1, %(count)s) AS n
"""

# What the maintained counts avoid: counting every work request at each scrape.
BASELINE_SQL = """
SELECT task_type, task_name, status, task_data->>'host_architecture', count(*)
FROM db_workrequest GROUP BY 1, 2, 3, 4
"""

TRIGGERS = ("db_workrequest_count_insert", "db_workrequest_count_update")


def set_up_django(database_url: str) -> None:
    os.environ["DEBUSINE_DATABASE_URL"] = database_url
    os.environ["DEBUSINE_REDIS_URL"] = REDIS_URL
    os.environ["DEBUSINE_REDIS_KEY_PREFIX"] = f"bench-metrics-{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")
    import django

    django.setup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-requests", type=int, default=1_000_000)
    parser.add_argument("--artifacts", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1_000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--updates", type=int, default=2_000)
    args = parser.parse_args()

    from debusine.server.project import instance
    from debusine.testing.embedded import drop_database, ensure_database_exists

    name = f"bench_metrics_{uuid.uuid4().hex[:8]}"
    database_url = instance.with_database_name(POSTGRES_URL, name)
    ensure_database_exists(database_url)
    try:
        set_up_django(database_url)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        run(database_url, args)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(database_url)


def timed_scrape() -> tuple[float, int]:
    from django.db import transaction

    from debusine.server.metrics.exposition import render

    started = time.perf_counter()
    with transaction.atomic():  # as the view runs, under ATOMIC_REQUESTS
        body, _content_type = render(None)
    return time.perf_counter() - started, len(body)


def print_breakdown() -> None:
    """Where one scrape's time goes: each query, and the encoding."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from prometheus_client.core import Metric
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import Collector, CollectorRegistry

    from debusine.server.metrics.exposition import DebusineCollector

    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        started = time.perf_counter()
        families = list(DebusineCollector().collect())
        collected = time.perf_counter()

    class Collected(Collector):
        def collect(self) -> list[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected())
    encoding_started = time.perf_counter()
    generate_latest(registry)
    encoded = time.perf_counter()
    print(
        f"  one scrape: collect {(collected - started) * 1000:.1f} ms, "
        f"encode {(encoded - encoding_started) * 1000:.1f} ms; its queries:"
    )
    for query in queries.captured_queries:
        sql = " ".join(query["sql"].split())[:70]
        print(f"    {float(query['time']) * 1000:7.1f} ms  {sql}")


def print_event_cost(count: int) -> None:
    """What recording one request's latency costs the request, and what writing it costs."""
    from debusine.server.metrics import events

    events.request_served("bench", "GET", 0.01)  # starts the flush thread
    events.flush()
    started = time.perf_counter()
    for _ in range(count):
        events.request_served("bench", "GET", 0.01)
    recorded = (time.perf_counter() - started) / count
    started = time.perf_counter()
    events.flush()
    flushed = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(100):
        events.redis_client().ping()
    ping = (time.perf_counter() - started) / 100
    print(
        f"recording one request's latency: {recorded * 1e6:.1f} us (in memory); writing "
        f"{count} of them to Redis: {flushed * 1000:.1f} ms (a bare PING: {ping * 1e6:.0f} us)"
    )


def timed_updates(connection: psycopg.Connection[tuple[object, ...]], count: int) -> float:
    """`count` single-row status changes (pending <-> running), one transaction each."""
    ids = [
        row[0]
        for row in connection.execute(
            f"SELECT id FROM db_workrequest WHERE status = {PENDING} LIMIT %s",
            [count // 2],
        )
    ]
    started = time.perf_counter()
    for target, source in ((RUNNING, PENDING), (PENDING, RUNNING)):
        for work_request_id in ids:
            connection.execute(
                f"UPDATE db_workrequest SET status = {target} WHERE id = %s AND status = {source}",
                [work_request_id],
            )
    return (time.perf_counter() - started) / (2 * len(ids))


def run(database_url: str, args: argparse.Namespace) -> None:
    from debusine.server.db.models import User

    User.objects.create_user("bench", "bench@example.org")
    with psycopg.connect(database_url, autocommit=True) as connection:
        started = time.perf_counter()
        connection.execute(WORK_REQUESTS_SQL, {"count": args.work_requests})
        connection.execute(ARTIFACTS_SQL, {"count": args.artifacts})
        connection.execute(WORKERS_SQL, {"count": args.workers})
        connection.execute("ANALYZE")
        print(
            f"{args.work_requests} work requests, {args.artifacts} artifacts, "
            f"{args.workers} workers inserted in {time.perf_counter() - started:.1f} s "
            "(shared 2-core machine: absolute numbers are noisy)",
            flush=True,
        )

        first, size = timed_scrape()
        print(
            f"first scrape (folds the bulk insert's deltas) {first * 1000:8.1f} ms, {size} bytes"
        )
        times = [timed_scrape()[0] for _ in range(args.scrapes)]
        median = statistics.median(times)
        print(
            f"scrape, median of {args.scrapes}                   {median * 1000:8.1f} ms "
            f"(worst {max(times) * 1000:.1f} ms)"
        )

        print_breakdown()

        baseline_times = []
        for _ in range(3):
            started = time.perf_counter()
            connection.execute(BASELINE_SQL).fetchall()
            baseline_times.append(time.perf_counter() - started)
        baseline = statistics.median(baseline_times)
        print(
            f"baseline: full-table GROUP BY of work requests {baseline * 1000:8.1f} ms "
            f"(median of 3; the scrape takes {median / baseline:.2f} of it)"
        )

        print_event_cost(args.updates)

        timed_updates(connection, args.updates)  # warm the rows and the plans
        with_triggers, without_triggers = [], []
        for _round in range(3):
            with_triggers.append(timed_updates(connection, args.updates))
            for trigger in TRIGGERS:
                connection.execute(f"ALTER TABLE db_workrequest DISABLE TRIGGER {trigger}")
            without_triggers.append(timed_updates(connection, args.updates))
            for trigger in TRIGGERS:
                connection.execute(f"ALTER TABLE db_workrequest ENABLE TRIGGER {trigger}")
        on, off = statistics.median(with_triggers), statistics.median(without_triggers)
        print(
            f"one status change (own transaction, median of 3 alternating rounds): "
            f"{on * 1e6:.0f} us with the counting triggers, {off * 1e6:.0f} us without "
            f"(x{on / off:.2f})"
        )


if __name__ == "__main__":
    main()
