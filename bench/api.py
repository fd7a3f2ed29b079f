"""
Latency and throughput of the REST API's hot paths, and whether they stay flat as history grows.

Starts its own server (gunicorn with uvicorn workers, `(2 x cores) + 1` by default) on a
throwaway database, then measures, from client threads over keep-alive connections:

- `POST /api/1.0/work-request/` (create a noop) and `GET /api/1.0/work-request/<id>/`;
- `GET /api/1.0/work-request/` (the first page of the list);

first on an empty history, then again after inserting `--history` work requests (default
100,000) straight into the database, so the two rows can be compared in the same run. For each
it prints requests per second, p50/p99 latency, and the server's CPU seconds per request.

Usage: `.venv/bin/python -m bench.api [--history 100000] [--requests 2000] [--threads 4]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import requests

from bench.common import cpu_seconds, rss_mib
from debusine.server.work_requests.sql import COMPLETED, SUCCESS
from debusine.testing.throwaway import ThrowawayInstance, throwaway_instance

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Work requests inserted in one statement, all completed noops of the bench user.
HISTORY_SQL = f"""
INSERT INTO db_workrequest (
    workspace_id, created_by_id, created_at, started_at, completed_at, status, result,
    task_type, task_name, task_data, version, priority_base, priority_adjustment,
    unblock_strategy, workflow_data, event_reactions, workflows_need_update
)
SELECT w.id, u.id, now() - make_interval(secs => n), now(), now(), {COMPLETED}, {SUCCESS},
       'Worker', 'noop', '{{"result": true}}', 0, 0, 0, 'deps', '{{}}', '{{}}', false
FROM generate_series(1, %(count)s) AS n,
     db_workspace AS w, db_user AS u
WHERE w.name = 'System' AND u.username = 'bench'
"""


@dataclass
class Measurement:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    server_cpu: float

    def row(self) -> str:
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"{self.name:34} {self.requests / self.seconds:8.1f} req/s   "
            f"p50 {statistics.median(ordered) * 1000:6.1f} ms   p99 {p99 * 1000:6.1f} ms   "
            f"server {self.server_cpu / self.requests * 1000:5.2f} CPU-ms/req"
        )


def measure(
    name: str,
    server: ThrowawayInstance,
    token: str,
    call: Callable[[requests.Session], requests.Response],
    total: int,
    threads: int,
) -> Measurement:
    """Run `call` `total` times from `threads` threads, each with its own session."""
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [total]
    failures: list[str] = []

    def work() -> None:
        session = requests.Session()
        session.headers["Token"] = token
        mine: list[float] = []
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            start = time.perf_counter()
            response = call(session)
            mine.append(time.perf_counter() - start)
            if response.status_code >= 300:
                failures.append(f"{response.status_code} {response.text[:200]}")
                break
        with lock:
            latencies.extend(mine)

    cpu_before = cpu_seconds(server.pid)
    start = time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        log = server.log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{name}: {failures[0]}\n--- server log:\n{log}")
    server_cpu = cpu_seconds(server.pid) - cpu_before
    return Measurement(name, len(latencies), elapsed, latencies, server_cpu)


def run_round(
    label: str, server: ThrowawayInstance, token: str, total: int, threads: int
) -> list[Measurement]:
    api = f"{server.api_url}/1.0"
    created: list[int] = []
    body = {"task_name": "noop", "task_data": {"result": True}, "event_reactions": {}}

    def create(session: requests.Session) -> requests.Response:
        response = session.post(f"{api}/work-request/", json=body)
        if response.status_code == 200:
            created.append(response.json()["id"])
        return response

    results = [measure(f"create work request ({label})", server, token, create, total, threads)]
    ids = iter(created * 2)
    id_lock = threading.Lock()

    def get_one(session: requests.Session) -> requests.Response:
        with id_lock:
            work_request_id = next(ids)
        return session.get(f"{api}/work-request/{work_request_id}/")

    results.append(measure(f"get work request ({label})", server, token, get_one, total, threads))
    results.append(
        measure(
            f"list first page ({label})",
            server,
            token,
            lambda session: session.get(f"{api}/work-request/"),
            total,
            threads,
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="debusine-bench-api-") as work,
        throwaway_instance(
            postgres_url=POSTGRES_URL,
            redis_url=REDIS_URL,
            data_dir=Path(work),
            name_prefix="debusine_bench_api",
            workers=args.workers,
        ) as server,
    ):
        token = server.create_contributor("bench")

        print(
            f"{args.workers} server workers, {args.threads} client threads, "
            f"{args.requests} requests per row"
        )
        rows = run_round("empty history", server, token, args.requests, args.threads)
        with psycopg.connect(server.database_url, autocommit=True) as connection:
            connection.execute(HISTORY_SQL, {"count": args.history})
            connection.execute("ANALYZE db_workrequest")
        rows += run_round(f"+{args.history} history", server, token, args.requests, args.threads)
        for row in rows:
            print(row.row())
        print(f"server RSS after the run (all workers): {rss_mib(server.pid):.0f} MiB")


if __name__ == "__main__":
    main()
