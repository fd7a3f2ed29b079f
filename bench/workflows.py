"""
Workflows end to end with real processes: a `noop` workflow of many children.

Starts, on a throwaway database, the server, the scheduler and beat, a Celery worker on the
`workflows` queue (the orchestrator), and then:

1. **real workers**: `--workers` real `debusine-worker` daemons (default 2) run a noop workflow
   of `--children` children (default 10,000), started through the API. Printed: how long the
   orchestrator took to populate it, children completed per second (workflow created to
   workflow completed), the orchestrator's CPU per child (the Celery worker's CPU over the
   run: populating and every roll-up), and, as the baseline measured in the same run, the
   same daemons' rate on standalone noops created through the API (`bench.noop.throughput`);
2. **concurrent completions**: `--simulated` protocol-level workers (default 1,000, in this
   process: websocket + get-next + completed, no task run) complete a noop workflow of
   `--simulated-children` children (default 10,000), up to 1,000 at a time.

Both print deadlocks and serialization failures seen: PostgreSQL's `pg_stat_database` counters
of the instance's database, and the matching lines in every process's log.

Targets (issue 12): 0 deadlocks; >= 30 children/s end to end on 2 cores; orchestrator <= 5 ms
of CPU per child.

Usage: `.venv/bin/python -m bench.workflows [--workers 2] [--children 10000] [--simulated 1000]
[--simulated-children 10000] [--baseline 500]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import tempfile
import time
from pathlib import Path

import aiohttp
import psycopg
import requests

from bench.common import cpu_seconds
from bench.dispatch import BenchWorker
from bench.noop import throughput, wait_until_idle
from debusine.server.work_requests.sql import COMPLETED, SUCCESS
from debusine.testing.throwaway import ThrowawayInstance, throwaway_instance
from debusine.testing.worker import WorkerProcess, start_worker

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")

WORKFLOW_SQL = f"""
SELECT root.status = {COMPLETED}, root.result, root.created_at, root.completed_at,
       (SELECT count(*) FROM db_workrequest c WHERE c.parent_id = root.id),
       (SELECT max(c.created_at) FROM db_workrequest c WHERE c.parent_id = root.id),
       (SELECT count(*) FROM db_workrequest c
        WHERE c.parent_id = root.id AND c.result <> {SUCCESS})
FROM db_workrequest root WHERE root.id = %s
"""
CONFLICTS_SQL = """
SELECT deadlocks, conflicts FROM pg_stat_database WHERE datname = current_database()
"""
LOG_MARKERS = ("deadlock detected", "could not serialize access")


def conflicts_seen(instance: ThrowawayInstance, database: psycopg.Connection) -> tuple[int, int]:
    """(PostgreSQL deadlocks of the database, log lines about deadlocks or serialization)."""
    row = database.execute(CONFLICTS_SQL).fetchone()
    deadlocks = int(row[0]) if row else 0
    lines = 0
    for log in instance.data_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        lines += sum(text.count(marker) for marker in LOG_MARKERS)
    return deadlocks, lines


def celery_cpu(instance: ThrowawayInstance) -> float:
    return sum(cpu_seconds(pid) for pid in instance.process_pids("celery"))


def start_workflow(session: requests.Session, api_url: str, template: str) -> int:
    response = session.post(
        f"{api_url}/1.0/workflow/", json={"template_name": template}, timeout=60
    )
    response.raise_for_status()
    workflow_id: int = response.json()["id"]
    return workflow_id


def create_template(session: requests.Session, api_url: str, name: str, children: int) -> None:
    response = session.post(
        f"{api_url}/1.0/workflow-template/",
        json={"name": name, "task_name": "noop", "task_data": {"children": children}},
        timeout=60,
    )
    response.raise_for_status()


def run_workflow(
    instance: ThrowawayInstance,
    session: requests.Session,
    database: psycopg.Connection,
    template: str,
    timeout: float,
) -> str:
    """Start a workflow of `template`, wait for it, and describe the run."""
    cpu_before = celery_cpu(instance)
    conflicts_before = conflicts_seen(instance, database)
    workflow_id = start_workflow(session, instance.api_url, template)
    deadline = time.monotonic() + timeout
    while True:
        row = database.execute(WORKFLOW_SQL, [workflow_id]).fetchone()
        assert row is not None
        if row[0]:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {workflow_id} did not complete: {row}")
        time.sleep(0.2)
    cpu = celery_cpu(instance) - cpu_before
    conflicts_after = conflicts_seen(instance, database)
    _, result, created_at, completed_at, children, last_child_at, unsuccessful = row
    deadlocks = conflicts_after[0] - conflicts_before[0]
    log_lines = conflicts_after[1] - conflicts_before[1]
    span = (completed_at - created_at).total_seconds()
    populate = (last_child_at - created_at).total_seconds() if last_child_at else 0.0
    return (
        f"workflow {workflow_id} ({result}): {children} children, {unsuccessful} unsuccessful; "
        f"populated in {populate:.1f} s; {children / span:.1f} children/s end to end "
        f"({span:.1f} s); orchestrator {cpu / children * 1000:.2f} CPU-ms/child "
        f"(Celery worker, populate + roll-ups); deadlocks {deadlocks}, "
        f"deadlock/serialization log lines {log_lines}"
    )


ENABLE_SIMULATED_SQL = """
UPDATE db_token SET enabled = true
WHERE id IN (SELECT token_id FROM db_worker WHERE name LIKE 'bench-simulated-%%')
"""


async def simulated_workers(
    instance: ThrowawayInstance, database: psycopg.Connection, count: int
) -> list[asyncio.Task[None]]:
    """Register, enable and connect `count` protocol-level workers; return their tasks."""
    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=connector)
    workers = []
    for index in range(count):
        key = secrets.token_hex(32)
        async with session.post(
            f"{instance.api_url}/1.0/worker/register/",
            json={"token": key, "fqdn": f"bench-simulated-{index}.example"},
        ) as response:
            assert response.status == 201, await response.text()
        workers.append(BenchWorker(session, instance.api_url, key))
    # Registered workers wait for an admin: enable them all at once.
    database.execute(ENABLE_SIMULATED_SQL)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in workers)), 600)
    except TimeoutError:
        ready = sum(worker.ready.is_set() for worker in workers)
        raise TimeoutError(f"only {ready} of {count} simulated workers connected") from None
    return tasks


async def concurrent_completions(
    instance: ThrowawayInstance,
    session: requests.Session,
    database: psycopg.Connection,
    count: int,
    children: int,
    timeout: float,
) -> str:
    tasks = await simulated_workers(instance, database, count)
    try:
        create_template(session, instance.api_url, "bench-concurrent", children)
        return await asyncio.to_thread(
            run_workflow, instance, session, database, "bench-concurrent", timeout
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def raise_open_files_limit() -> None:
    """Each simulated worker holds a websocket: allow as many open files as the system does."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    raise_open_files_limit()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--simulated", type=int, default=1_000)
    parser.add_argument("--simulated-children", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=500, help="standalone noops")
    parser.add_argument("--server-workers", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    server_workers = args.server_workers or 2 * (os.cpu_count() or 1) + 1

    with (
        tempfile.TemporaryDirectory() as data_dir,
        throwaway_instance(
            postgres_url=POSTGRES_URL,
            redis_url=REDIS_URL,
            data_dir=Path(data_dir),
            name_prefix="bench_workflows",
            workers=server_workers,
            scheduling=True,
            workflows=True,
        ) as instance,
    ):
        token = instance.create_contributor("bench")
        instance.admin("workspace", "grant_role", "System", "owner", "bench-contributors")
        session = requests.Session()
        session.headers["Token"] = token
        print(f"{server_workers} server processes, {os.cpu_count()} cores shared by everything")
        with psycopg.connect(instance.database_url, autocommit=True) as database:
            daemons: list[WorkerProcess] = []
            try:
                for index in range(args.workers):
                    daemons.append(
                        start_worker(
                            instance.api_url,
                            Path(data_dir) / f"worker-{index}",
                            activation_token=instance.create_worker_activation(
                                f"bench-{index}.example"
                            ),
                            log_level="WARNING",
                        )
                    )
                if daemons:
                    create_template(session, instance.api_url, "bench-warm-up", 20)
                    run_workflow(instance, session, database, "bench-warm-up", 120)
                    wait_until_idle(database)
                if args.baseline:
                    print(
                        "baseline, standalone noops: "
                        + throughput(instance, token, database, args.baseline, 4),
                        flush=True,
                    )
                if args.children:
                    create_template(session, instance.api_url, "bench-real", args.children)
                    print(
                        f"{args.workers} real workers: "
                        + run_workflow(instance, session, database, "bench-real", args.timeout),
                        flush=True,
                    )
            finally:
                for daemon in daemons:
                    daemon.stop()
            if args.simulated:
                print(
                    f"{args.simulated} simulated workers: "
                    + asyncio.run(
                        concurrent_completions(
                            instance,
                            session,
                            database,
                            args.simulated,
                            args.simulated_children,
                            args.timeout,
                        )
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
