"""
Noop work requests end to end with real processes: throughput, idle latency, server cost, memory.

Starts, on a throwaway database, the server side as `make run` runs it (gunicorn + uvicorn, and
the scheduler: one Celery process that also runs server tasks and beat), and `--workers` real
worker daemons (default 2), all on this machine: ours, or with `--worker debian-0.11` Debian's
own `debusine-worker` 0.11.3 (fetched and unpacked as the compatibility tests do, see
debusine/testing/reference_client.py). Then:

- idle latency: one noop at a time, created through the API; created-to-completed is read from
  the work request's own `created_at` / `completed_at` (server clock, no polling error);
- throughput: `--requests` noops created through the API by a few client threads as fast as the
  server takes them, and the rate at which they complete (first creation to last completion);
  the server side's CPU seconds per noop and memory, by role; and the gap between two
  consecutive work requests of one worker (its previous one's `completed_at` to the next one's
  `started_at`, i.e. how long the worker took to ask for more);
- memory per role (RSS and PSS from /proc/PID/smaps_rollup, each role summed over its
  processes: the gunicorn arbiter and its workers, the Celery processes), application
  processes only (not PostgreSQL, Redis or the worker daemons), against issue 16's targets
  (<= 475 MiB RSS, <= 300 MiB PSS) and the reference's figures measured the same way;
  `--split-roles` runs the layout before issue 16 instead (the scheduler, beat and a prefork
  server-task worker apart) to compare in one sitting;
- the same again after inserting `--history` finished work requests (default 100,000), to show
  whether it stays flat as history grows.

Reference figures (Debusine, same kind of machine): 4.5-5 noops/s with 2 workers, 0.32-0.40
server CPU-s per noop, 150-175 ms idle created-to-completed.
Targets: >= 50 noops/s, <= 30 ms idle, flat to 10^5 work requests.

Reference figures with Debian's 0.11.3 workers (issue 16, same machine): 3.31 noops/s, 245 ms
idle created-to-completed p50. Target: >= 10x, i.e. >= 33 noops/s.

Usage: `.venv/bin/python -m bench.noop [--worker ours|debian-0.11] [--workers 2]
[--requests 1000] [--history 100000] [--split-roles]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import requests

from bench.api import HISTORY_SQL
from bench.common import cpu_seconds, format_memory, memory_by_role, process_tree
from debusine.server.work_requests.sql import HELD, SUCCESS
from debusine.testing.devstack import CELERY_APP, ProcessSpec, beat_argv
from debusine.testing.processes import stop_process
from debusine.testing.reference_client import reference_worker
from debusine.testing.reference_worker import start_reference_worker
from debusine.testing.throwaway import ThrowawayInstance, throwaway_instance
from debusine.testing.worker import WorkerProcess, start_worker

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")

UNFINISHED_SQL = f"SELECT count(*) FROM db_workrequest WHERE status IN {HELD}"
SPAN_SQL = f"""
SELECT count(*), min(created_at), max(completed_at),
       count(*) FILTER (WHERE result <> {SUCCESS})
FROM db_workrequest WHERE id = ANY(%s)
"""
LATENCY_SQL = "SELECT status, completed_at - created_at FROM db_workrequest WHERE id = %s"
RUNS_SQL = """
SELECT worker_id, started_at, completed_at FROM db_workrequest
WHERE id = ANY(%s) AND started_at IS NOT NULL AND completed_at IS NOT NULL
ORDER BY worker_id, started_at
"""
WORKER_KINDS = ("ours", "debian-0.11")

#: Issue 16: the server side of `make run` on 2 cores, application processes only.
TARGET_RSS_MIB = 475
TARGET_PSS_MIB = 300
#: The reference (Debusine 0.11.3) measured the same way, application processes only.
REFERENCE_RSS_MIB = 948
REFERENCE_PSS_MIB = 601


def roles(instance: ThrowawayInstance) -> dict[str, list[int]]:
    """
    The application processes by role (server: the gunicorn arbiter, whose workers are its
    children; then the scheduler, Celery, beat, or whatever the stack runs): not PostgreSQL,
    Redis or the worker daemons.
    """
    by_role: dict[str, list[int]] = {}
    for spec, process in instance.supervisor.running:
        if process.poll() is None:
            by_role.setdefault(spec.name, []).append(process.pid)
    return by_role


def server_cpu(instance: ThrowawayInstance) -> dict[str, float]:
    """CPU seconds used so far by each role (process trees: gunicorn counts its workers)."""
    return {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in roles(instance).items()}


def server_memory(instance: ThrowawayInstance) -> str:
    return f"server memory {format_memory(memory_by_role(roles(instance)))}"


def memory_report(instance: ThrowawayInstance) -> str:
    """Memory per role against the targets and the reference's figures (issue 16)."""
    by_role = memory_by_role(roles(instance))
    rss = sum(value[0] for value in by_role.values())
    pss = sum(value[1] for value in by_role.values())
    lines = ["memory of the application processes, MiB (each role summed over its processes):"]
    lines.append(f"  {'role':<10} {'processes':>9} {'RSS':>7} {'PSS':>7}")
    processes = {role: len(process_tree_all(pids)) for role, pids in roles(instance).items()}
    for role, (role_rss, role_pss) in by_role.items():
        lines.append(f"  {role:<10} {processes.get(role, 0):>9} {role_rss:7.0f} {role_pss:7.0f}")
    lines.append(f"  {'total':<10} {sum(processes.values()):>9} {rss:7.0f} {pss:7.0f}")
    lines.append(
        f"  = {rss / TARGET_RSS_MIB:.2f} x the RSS target ({TARGET_RSS_MIB} MiB), "
        f"{pss / TARGET_PSS_MIB:.2f} x the PSS target ({TARGET_PSS_MIB} MiB); "
        f"{rss / REFERENCE_RSS_MIB:.2f} x / {pss / REFERENCE_PSS_MIB:.2f} x the reference's "
        f"application processes ({REFERENCE_RSS_MIB} / {REFERENCE_PSS_MIB} MiB, issue 16)"
    )
    return "\n".join(lines)


def process_tree_all(pids: list[int]) -> list[int]:
    return [member for pid in pids for member in process_tree(pid)]


def split_roles(instance: ThrowawayInstance, data_dir: Path) -> None:
    """
    Replace the Celery processes by the layout before issue 16: the scheduler, beat and a
    (prefork) server-task worker, each in its own interpreter(s).
    """
    for spec, process in list(instance.supervisor.running):
        if spec.name in ("scheduler", "beat", "celery"):
            stop_process(process, 20)
            instance.supervisor.running.remove((spec, process))
    scheduler = [
        sys.executable, "-m", "celery", "--app", CELERY_APP, "worker",
        "--queues", "scheduler", "--pool", "solo", "--concurrency", "1",
        "--hostname", f"scheduler-{uuid.uuid4().hex[:8]}@%h", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    celery = [
        sys.executable, "-m", "celery", "--app", CELERY_APP, "worker",
        "--queues", "celery", "--concurrency", "1",
        "--hostname", f"celery-{uuid.uuid4().hex[:8]}@%h", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    for spec in (
        ProcessSpec("scheduler", scheduler),
        ProcessSpec("beat", beat_argv()),
        ProcessSpec("celery", celery),
    ):
        instance.supervisor.start(
            spec, env=instance.environment, output=data_dir / f"{spec.name}-split.log"
        )


def create_noop(session: requests.Session, api_url: str) -> int:
    response = session.post(
        f"{api_url}/1.0/work-request/", json={"task_name": "noop", "task_data": {}}, timeout=30
    )
    response.raise_for_status()
    work_request_id: int = response.json()["id"]
    return work_request_id


def wait_until_idle(database: psycopg.Connection, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = database.execute(UNFINISHED_SQL).fetchone()
        if row is not None and row[0] == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("work requests still unfinished")
        time.sleep(0.005)


def idle_latency(
    instance: ThrowawayInstance, token: str, database: psycopg.Connection, count: int
) -> str:
    session = requests.Session()
    session.headers["Token"] = token
    latencies = []
    for _ in range(count):
        work_request_id = create_noop(session, instance.api_url)
        while True:
            row = database.execute(LATENCY_SQL, [work_request_id]).fetchone()
            assert row is not None
            if row[0] == "completed":
                latencies.append(row[1].total_seconds())
                break
            time.sleep(0.002)
        time.sleep(0.05)
    ordered = sorted(latencies)
    return (
        f"idle created->completed: p50 {statistics.median(ordered) * 1000:6.1f} ms  "
        f"p90 {ordered[int(len(ordered) * 0.9)] * 1000:6.1f} ms  "
        f"max {ordered[-1] * 1000:6.1f} ms  ({count} noops, one at a time)"
    )


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def gaps_between_tasks(database: psycopg.Connection, ids: list[int]) -> str:
    """
    The distribution of the time between one work request's completion and the start (get-next)
    of the same worker's next one, over the work requests `ids`.
    """
    gaps: list[float] = []
    previous: tuple[object, object] | None = None
    for worker_id, started_at, completed_at in database.execute(RUNS_SQL, [ids]).fetchall():
        if previous is not None and previous[0] == worker_id:
            gaps.append((started_at - previous[1]).total_seconds())
        previous = (worker_id, completed_at)
    if not gaps:
        return "gap between a worker's consecutive tasks: none measured"
    ordered = sorted(gaps)
    slow = sum(1 for gap in ordered if gap >= 0.5)
    return (
        f"gap between a worker's consecutive tasks (completed -> next started): "
        f"p50 {statistics.median(ordered) * 1000:.1f} ms  "
        f"p90 {percentile(ordered, 0.9) * 1000:.1f} ms  "
        f"max {ordered[-1] * 1000:.1f} ms  ({len(ordered)} gaps, {slow} >= 500 ms)"
    )


def throughput(
    instance: ThrowawayInstance, token: str, database: psycopg.Connection, count: int, threads: int
) -> str:
    ids: list[int] = []
    lock = threading.Lock()
    per_thread = count // threads

    def create_many() -> None:
        session = requests.Session()
        session.headers["Token"] = token
        mine = [create_noop(session, instance.api_url) for _ in range(per_thread)]
        with lock:
            ids.extend(mine)

    cpu_before = server_cpu(instance)
    started = time.monotonic()
    workers = [threading.Thread(target=create_many) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    created = time.monotonic() - started
    wait_until_idle(database)
    cpu_after = server_cpu(instance)
    cpu_parts = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    cpu = sum(cpu_parts.values())
    row = database.execute(SPAN_SQL, [ids]).fetchone()
    assert row is not None
    total, first_created, last_completed, failed = row
    span = (last_completed - first_created).total_seconds()
    return (
        f"throughput: {total / span:6.1f} noops/s completed ({total} in {span:.1f} s; created "
        f"at {total / created:.0f}/s by {threads} client threads; {failed} not successful); "
        f"server {cpu / total * 1000:.1f} CPU-ms/noop ("
        + ", ".join(f"{name} {value / total * 1000:.1f}" for name, value in cpu_parts.items())
        + f"); {server_memory(instance)}\n{gaps_between_tasks(database, ids)}"
    )


def start_daemon(kind: str, api_url: str, directory: Path, activation: str) -> WorkerProcess:
    """Start one worker daemon of `kind` (see WORKER_KINDS), logging warnings only."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "debian-0.11":
        return start_reference_worker(
            reference_worker(),
            api_url,
            directory,
            activation_token=activation,
            log_level="WARNING",
        )
    return start_worker(api_url, directory, activation_token=activation, log_level="WARNING")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--worker",
        choices=WORKER_KINDS,
        default="ours",
        help="whose worker daemon runs the noops: ours, or Debian's debusine-worker 0.11.3",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=50)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--server-workers", type=int, default=0)
    parser.add_argument(
        "--split-roles",
        action="store_true",
        help="run the scheduler, beat and server tasks in separate processes (the layout "
        "before issue 16), to compare",
    )
    args = parser.parse_args()
    server_workers = args.server_workers or 2 * (os.cpu_count() or 1) + 1

    with (
        tempfile.TemporaryDirectory() as data_dir,
        throwaway_instance(
            postgres_url=POSTGRES_URL,
            redis_url=REDIS_URL,
            data_dir=Path(data_dir),
            name_prefix="bench_noop",
            workers=server_workers,
            scheduling=True,
        ) as instance,
    ):
        if args.split_roles:
            # The layout before issue 16: the scheduler, beat and server tasks each in their
            # own interpreter(s), a prefork Celery worker for the latter.
            split_roles(instance, Path(data_dir))
        token = instance.create_contributor("bench")
        daemons: list[WorkerProcess] = []
        try:
            for index in range(args.workers):
                activation = instance.create_worker_activation(f"bench-{index}.example")
                daemons.append(
                    start_daemon(
                        args.worker,
                        instance.api_url,
                        Path(data_dir) / f"worker-{index}",
                        activation,
                    )
                )
            with psycopg.connect(instance.database_url, autocommit=True) as database:
                # Warm up: every worker has connected, reported metadata and run something.
                warm_up = requests.Session()
                warm_up.headers["Token"] = token
                for _ in range(20):
                    create_noop(warm_up, instance.api_url)
                wait_until_idle(database, timeout=120)

                print(
                    f"{args.workers} worker daemons ({args.worker}), {server_workers} server "
                    "processes, "
                    f"{os.cpu_count()} cores shared by everything"
                )
                print(idle_latency(instance, token, database, args.idle), flush=True)
                print(
                    throughput(instance, token, database, args.requests, args.threads),
                    flush=True,
                )
                print(memory_report(instance), flush=True)
                if args.history:
                    database.execute(HISTORY_SQL, {"count": args.history})
                    database.execute("ANALYZE")
                    print(f"after inserting {args.history} finished work requests:")
                    print(idle_latency(instance, token, database, args.idle), flush=True)
                    print(
                        throughput(instance, token, database, args.requests, args.threads),
                        flush=True,
                    )
        finally:
            for daemon in daemons:
                daemon.stop()


if __name__ == "__main__":
    main()
