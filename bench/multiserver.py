"""
Requests per second of one server instance against two behind haproxy.

Starts a throwaway instance (gunicorn with `--workers` uvicorn workers per instance, default 2)
and a second instance of the same size on the same database and Redis, then measures, from
`--threads` client threads over keep-alive connections, `GET /api/1.0/work-request/<id>/`
(authenticated, a few queries, no file):

- straight to one instance (no proxy);
- through Debian's haproxy with one instance behind it;
- through haproxy with both instances behind it (round robin).

It prints requests per second, p50/p99 latency and the CPU seconds each process group spent
per request (server instances, haproxy), and the cores of the machine. A second instance adds
throughput only when the machine has idle cores for it: on 2 cores, the client threads,
haproxy, PostgreSQL and the servers already share them, and the figure stays flat (see the
explanation printed at the end and docs/reference/benchmarks.md).

Usage: `.venv/bin/python -m bench.multiserver [--requests 3000] [--threads 8] [--workers 2]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.common import cpu_seconds
from debusine.testing.devstack import (
    STARTUP_TIMEOUT,
    ProcessSpec,
    gunicorn_argv,
    wait_until_answering,
)
from debusine.testing.haproxy import Haproxy
from debusine.testing.processes import free_port
from debusine.testing.throwaway import throwaway_instance

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Measurement:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]  # process group -> CPU seconds spent during the run

    def line(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        cpu = ", ".join(
            f"{group} {seconds / self.requests * 1000:.2f}" for group, seconds in self.cpu.items()
        )
        return (
            f"{self.name:<32} {self.requests / self.seconds:8.0f} req/s"
            f"   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   CPU-ms/request: {cpu}"
        )


def measure(
    name: str, url: str, token: str, total: int, threads: int, groups: dict[str, list[int]]
) -> Measurement:
    """`total` GETs of `url` from `threads` threads; CPU of each PID group over the run."""
    per_thread = total // threads
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def run() -> None:
        session = requests.Session()
        session.headers["Token"] = token
        mine = []
        for _ in range(per_thread):
            started = time.perf_counter()
            response = session.get(url, timeout=60)
            mine.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
        with lock:
            latencies.extend(mine)

    before = {group: sum(cpu_seconds(pid) for pid in pids) for group, pids in groups.items()}
    workers = [threading.Thread(target=run) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{name}: {len(errors)} failed requests, first: {errors[0]}")
    cpu = {
        group: sum(cpu_seconds(pid) for pid in pids) - before[group]
        for group, pids in groups.items()
    }
    return Measurement(name, per_thread * threads, seconds, latencies, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per instance")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-multiserver-") as scratch:
        directory = Path(scratch)
        with throwaway_instance(
            postgres_url=POSTGRES_URL,
            redis_url=REDIS_URL,
            data_dir=directory,
            name_prefix="bench_multiserver",
            workers=args.workers,
        ) as instance:
            token = instance.create_contributor("bench")
            created = requests.post(
                f"{instance.api_url}/1.0/work-request/",
                json={"task_name": "noop", "task_data": {"result": True}},
                headers={"Token": token},
                timeout=30,
            )
            created.raise_for_status()
            path = f"/api/1.0/work-request/{created.json()['id']}/"

            second_port = free_port()
            instance.supervisor.start(
                ProcessSpec("server-two", gunicorn_argv(f"127.0.0.1:{second_port}", args.workers)),
                env=instance.environment,
                output=directory / "server-two.log",
            )
            second_url = f"http://127.0.0.1:{second_port}"
            wait_until_answering(
                f"{second_url}/api/1.0/whoami/", instance.supervisor, STARTUP_TIMEOUT
            )
            first_port = int(instance.base_url.rsplit(":", 1)[1])
            one = instance.process_pids("server")
            two = instance.process_pids("server-two")

            print(f"{os.cpu_count()} cores; {args.workers} uvicorn workers per instance;")
            print(f"{args.threads} client threads, {args.requests} requests per row; GET {path}")
            results = [
                measure(
                    "one instance, direct",
                    instance.base_url + path,
                    token,
                    args.requests,
                    args.threads,
                    {"servers": one},
                )
            ]
            for name, backends, pids in (
                ("one instance behind haproxy", {"one": first_port}, one),
                (
                    "two instances behind haproxy",
                    {"one": first_port, "two": second_port},
                    one + two,
                ),
            ):
                with Haproxy(directory, backends) as haproxy:
                    assert haproxy.process is not None
                    results.append(
                        measure(
                            name,
                            haproxy.url + path,
                            token,
                            args.requests,
                            args.threads,
                            {"servers": pids, "haproxy": [haproxy.process.pid]},
                        )
                    )
            for result in results:
                print(result.line())
            gain = (
                results[2].requests
                / results[2].seconds
                / (results[1].requests / results[1].seconds)
            )
            print(f"two instances / one instance behind haproxy: x{gain:.2f}")
            cores = os.cpu_count() or 1
            if cores <= 4:
                print(
                    f"With {cores} cores, the client threads, haproxy, PostgreSQL and every"
                    " server worker compete for the same CPUs: a second instance adds processes,"
                    " not CPU, so the figure cannot grow much (it may drop from the extra"
                    " context switches). On a machine with idle cores (or the instances on"
                    " machines of their own) the second instance adds its workers' throughput."
                )


if __name__ == "__main__":
    main()
