"""
What rendering each web UI page costs on a large instance.

Creates a throwaway database (migrated), inserts `--work-requests` work requests (default
100,000: several tasks, architectures and statuses, one in ten pending) with generate_series,
a workflow with `--children` children (default 200), artifacts with log files, 50 workers,
`--pools` dynamic worker pools (default 10) sharing 200 pool workers with live instances and
1000 recorded instance terminations each, and a manual-unblock work request with a review log;
then renders each page `--renders` times (default 50) through Django's test client as a
signed-in contributor (session, permissions, templates: everything but the network) and
prints each page's p50 and p95 and its number of SQL queries.

The logs are real files in the instance's local store: a build log of LARGE_LOG_LINES lines
(about 2 MB, just under the file viewer's cap) for the file viewer and a work request's log
search, and a small log for each of the workflow's children for the search across its tree.
A running work request has a live log of LIVE_LOG_FRAMES frames in Redis, and the user has
TOKENS tokens.

Target (issue 18): p95 <= 50 ms per page with 10^5 work requests. The machine is shared: read
absolute numbers with care.

Usage: `.venv/bin/python -m bench.webui [--work-requests 100000] [--renders 50]`
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from typing import Any

import psycopg

from bench.metrics import ARTIFACTS_SQL, POSTGRES_URL, WORK_REQUESTS_SQL, set_up_django

#: Lines of the large build log (about 53 bytes each, about 2 MB in all).
LARGE_LOG_LINES = 38_000
#: Frames of the running work request's live log.
LIVE_LOG_FRAMES = 1000
#: Tokens of the signed-in user.
TOKENS = 20

WORKFLOW_CHILDREN_SQL = """
INSERT INTO db_workrequest (
    workspace_id, created_by_id, created_at, status, result, task_type, task_name, task_data,
    version, priority_base, priority_adjustment, unblock_strategy, workflow_data,
    event_reactions, workflows_need_update, parent_id
)
SELECT w.id, u.id, now(), 'completed', 'success', 'Worker', 'noop', '{}', 0, 0, 0, 'deps',
       '{}', '{}', false, %(parent)s
FROM generate_series(1, %(count)s) AS n, db_workspace AS w, db_user AS u
WHERE w.name = 'System' AND u.username = 'bench'
"""

WORKERS_SQL = """
INSERT INTO db_worker (name, worker_type, registered_at, connected_at, static_metadata,
                       dynamic_metadata, concurrency, worker_pool_data)
SELECT 'bench-' || n, 'external', now(), CASE WHEN n %% 2 = 0 THEN now() END, '{}',
       jsonb_build_object('system:architectures', jsonb_build_array('amd64', 'i386'),
                          'noop:version', 1), 1, '{}'
FROM generate_series(1, 50) AS n
"""


# Pool workers with live instances: a fifth launching (activation token not used yet), the
# others registered, some draining; spread over the pools round-robin.
POOL_WORKERS_SQL = """
INSERT INTO db_worker (name, worker_type, registered_at, connected_at, static_metadata,
                       dynamic_metadata, concurrency, worker_pool_id, worker_pool_data,
                       instance_created_at, draining_at)
SELECT 'bench-pool-' || n, 'external', now(), now(), '{}',
       jsonb_build_object('system:architectures', jsonb_build_array('amd64')), 1,
       pools.ids[1 + n %% array_length(pools.ids, 1)],
       jsonb_build_object('instance_id', 'i-' || n), now() - interval '2 hours',
       CASE WHEN n %% 7 = 0 THEN now() END
FROM generate_series(1, 200) AS n,
     (SELECT array_agg(id ORDER BY id) AS ids FROM db_workerpool) AS pools
"""

# Ended instances of every pool, over the last two months.
POOL_STATISTICS_SQL = """
INSERT INTO db_workerpoolstatistics (worker_pool_id, instance_id, started_at, ended_at,
                                     runtime_seconds, reason, boot_seconds, work_requests)
SELECT p.id, 'i-old-' || n, now() - n * interval '1 hour' - interval '40 minutes',
       now() - n * interval '1 hour', 2400,
       (ARRAY['idle', 'scale-in', 'ephemeral', 'recycled'])[1 + n %% 4], 45, n %% 5
FROM db_workerpool AS p, generate_series(1, %(count)s) AS n
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-requests", type=int, default=100_000)
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument("--renders", type=int, default=50)
    args = parser.parse_args()

    from debusine.server.project import instance
    from debusine.testing.embedded import drop_database, ensure_database_exists

    name = f"bench_webui_{uuid.uuid4().hex[:8]}"
    database_url = instance.with_database_name(POSTGRES_URL, name)
    ensure_database_exists(database_url)
    try:
        set_up_django(database_url)
        os.environ.setdefault("DEBUSINE_DATA_DIR", f"/tmp/{name}")
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        run(database_url, args)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(database_url)
        shutil.rmtree(f"/tmp/{name}", ignore_errors=True)


def stored_file(contents: bytes) -> Any:
    """The File of `contents`, put in the default (local) store."""
    from pathlib import Path

    from debusine.server.db.models import File, FileStore
    from debusine.server.file_stores import get_backend

    store = FileStore.objects.get(name=FileStore.DEFAULT_NAME)
    file = File.objects.get_or_create_by_hash(hashlib.sha256(contents).digest(), len(contents))
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory, "contents")
        source.write_bytes(contents)
        get_backend(store).add_file(file, source, move=True)
    return file


def large_log() -> bytes:
    """A build log: compiler lines, a warning every 100 lines, one error near the end."""
    lines = []
    for number in range(LARGE_LOG_LINES):
        if number == LARGE_LOG_LINES - 50:
            lines.append("error: missing header foo.h (the one match of the search)")
        elif number % 100 == 0:
            lines.append(f"warning: unused variable 'v{number}' [-Wunused-variable]")
        else:
            lines.append(f"gcc -O2 -g -c src/file{number:05d}.c -o obj/file{number:05d}.o")
    return ("\n".join(lines) + "\n").encode()


def add_logs(
    work_request_ids: list[int], workspace: Any, contents: bytes, path: str = "build.log"
) -> list[int]:
    """A debug-log artifact holding `contents` as `path` for each work request; their ids."""
    from debusine.server.db.models import Artifact, FileInArtifact

    file = stored_file(contents)
    artifacts = Artifact.objects.bulk_create(
        Artifact(
            category="debusine:work-request-debug-logs",
            workspace=workspace,
            created_by_work_request_id=work_request_id,
        )
        for work_request_id in work_request_ids
    )
    FileInArtifact.objects.bulk_create(
        FileInArtifact(artifact=artifact, path=path, file=file, complete=True)
        for artifact in artifacts
    )
    return [artifact.pk for artifact in artifacts]


def add_live_log(work_request_id: int) -> None:
    """LIVE_LOG_FRAMES frames of build output in the work request's live log (Redis)."""
    from debusine.server.work_requests import live_logs

    for number in range(LIVE_LOG_FRAMES):
        live_logs.append(
            {
                "type": "log_data",
                "work_request_id": work_request_id,
                "stream": "stdout",
                "data": "".join(
                    f"gcc -O2 -c src/file{number:04d}_{line}.c -o obj/{number:04d}_{line}.o\n"
                    for line in range(5)
                ),
                "timestamp": "2026-12-03T12:00:00+00:00",
            }
        )


def populate(database_url: str, args: argparse.Namespace) -> dict[str, int]:
    """Bulk-insert the history; return the ids the pages are rendered for."""
    from debusine.server.db.models import (
        Asset,
        AssetCategory,
        Group,
        Token,
        User,
        WorkerPool,
        WorkRequest,
        Workspace,
    )
    from debusine.server.work_requests import transitions

    user = User.objects.create_user("bench", "bench@example.org")
    workspace = Workspace.objects.get(name="System")
    group = Group.objects.create(name="bench", scope=workspace.scope)
    group.set_members([user])
    workspace.grant_role(group, "contributor")
    with psycopg.connect(database_url, autocommit=True) as connection:
        started = time.perf_counter()
        connection.execute(WORK_REQUESTS_SQL, {"count": args.work_requests})
        connection.execute(ARTIFACTS_SQL, {"count": args.work_requests // 10})
        connection.execute(WORKERS_SQL, {})
        workflow = WorkRequest.objects.create(
            workspace=workspace, created_by=user, task_type="Workflow", task_name="noop"
        )
        connection.execute(WORKFLOW_CHILDREN_SQL, {"parent": workflow.pk, "count": args.children})
        account = Asset.objects.create(
            category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
            data={
                "provider_type": "local",
                "name": "bench",
                "configuration": {},
                "credentials": {},
            },
        )
        for number in range(args.pools):
            WorkerPool.objects.create(
                name=f"bench-pool-{number}",
                provider_account=account,
                architectures=["amd64"],
                specifications={"provider_type": "local", "api_url": "http://127.0.0.1:1/api"},
                limits={"max_active_instances": 30, "target_max_seconds_per_month": 10**7},
                counters={"launches": 1000, "terminated:idle": 250},
            )
        if args.pools:
            connection.execute(POOL_WORKERS_SQL, {})
            connection.execute(POOL_STATISTICS_SQL, {"count": 1000})
        connection.execute("ANALYZE")
        print(
            f"{args.work_requests} work requests, {args.work_requests // 10} artifacts, 50 "
            f"workers, a workflow of {args.children}, {args.pools} worker pools (200 pool "
            f"workers, {1000 * args.pools} terminations) inserted in "
            f"{time.perf_counter() - started:.1f} s (shared 2-core machine: absolute numbers "
            "are noisy)",
            flush=True,
        )
    done = WorkRequest.objects.filter(status="completed").order_by("-pk").first()
    pending = (
        WorkRequest.objects.filter(status="pending", task_type="Worker").order_by("-pk").first()
    )
    assert done is not None and pending is not None
    running = WorkRequest.objects.filter(status="running").order_by("-pk").first()
    assert running is not None
    [logs] = add_logs([done.pk], workspace, large_log())
    children = list(workflow.children.values_list("pk", flat=True))
    small_log = large_log()[: 20 * 1024].rsplit(b"\n", 1)[0] + b"\nerror: a child's error\n"
    add_logs(children, workspace, small_log)
    add_live_log(running.pk)
    for number in range(TOKENS):
        Token.objects.create_with_key(user=user, comment=f"bench token {number}", enabled=True)
    review = WorkRequest.objects.create(
        workspace=workspace,
        created_by=user,
        task_type="Worker",
        task_name="noop",
        task_data={"result": True},
        status="blocked",
        unblock_strategy="manual",
    )
    for number in range(20):
        transitions.manual_unblock(review, user, notes=f"review note {number}\n" * 5)
    return {
        "done": done.pk,
        "pending": pending.pk,
        "running": running.pk,
        "workflow": workflow.pk,
        "artifact": logs,
        "review": review.pk,
    }


def run(database_url: str, args: argparse.Namespace) -> None:
    from django.db import connection
    from django.test import Client

    from debusine.server.db.models import User

    ids = populate(database_url, args)
    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.get(username="bench"))
    base = "/debusine/System"
    pages = {
        "home": "/",
        "workspace": f"{base}/",
        "work request list": f"{base}/work-request/",
        "list, older page": f"{base}/work-request/?before={ids['done']}",
        "list, status=pending": f"{base}/work-request/?status=pending",
        "list, task=sbuild": f"{base}/work-request/?task=sbuild",
        "work request": f"{base}/work-request/{ids['done']}/",
        "pending (why not)": f"{base}/work-request/{ids['pending']}/",
        f"workflow ({args.children})": f"{base}/work-request/{ids['workflow']}/",
        "artifact": f"{base}/artifact/{ids['artifact']}/",
        "log viewer (2 MB)": f"{base}/artifact/{ids['artifact']}/file/build.log",
        "log viewer, search": f"{base}/artifact/{ids['artifact']}/file/build.log?search=error",
        "log search, 1 request": f"{base}/work-request/{ids['done']}/logs/search/?q=error",
        f"log search, tree ({args.children})": (
            f"{base}/work-request/{ids['workflow']}/logs/search/?q=error"
        ),
        "running (live log)": f"{base}/work-request/{ids['running']}/",
        f"live log ({LIVE_LOG_FRAMES} frames)": (
            f"{base}/work-request/{ids['running']}/live-log/?from=0"
        ),
        "tokens": "/-/user/tokens/",
        "failed": f"{base}/failed/",
        "results matrix": f"{base}/results/",
        "collections": f"{base}/collection/",
        "manual unblock (review)": f"{base}/work-request/{ids['review']}/",
        "workers": "/-/workers/",
        f"worker pools ({args.pools})": "/-/worker-pools/",
        "worker pool": "/-/worker-pools/bench-pool-0/",
        "queue": "/-/queue/",
    }
    print(f"{'page':<26} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8}")
    for name, url in pages.items():
        queries: list[str] = []

        def count(
            execute: Any,
            sql: str,
            params: Any,
            many: bool,
            context: Any,
            seen: list[str] = queries,
        ) -> Any:
            seen.append(sql)
            return execute(sql, params, many, context)

        # A wrapper survives the connection being returned and taken again between requests.
        with connection.execute_wrapper(count):
            response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(args.renders):
            started = time.perf_counter()
            client.get(url)
            times.append(time.perf_counter() - started)
        times.sort()
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        print(
            f"{name:<26} {statistics.median(times) * 1000:8.1f} {p95 * 1000:8.1f} "
            f"{len(queries):8d}",
            flush=True,
        )
    from debusine.server.work_requests import live_logs

    live_logs.redis_client().delete(live_logs.key(ids["running"]))


if __name__ == "__main__":
    main()
