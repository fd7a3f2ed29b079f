"""
Load: many simulated workers and a stream of clients against one server, for a bounded time.

Starts its own server (gunicorn with `(2 x cores) + 1` uvicorn workers and the scheduler) on a
throwaway database, then, from this one process with asyncio:

- registers `--workers` simulated workers (real HTTP calls, the 0.11 worker's sequence from
  protocol.md §4), enables them, and connects each one's websocket; each answers
  `request_dynamic_metadata` with its metadata and `work_request_available` with get-next, then
  reports the noop it got as completed;
- runs `--clients` client loops for `--seconds`: create a noop, list work requests (every 5th
  round), create a small artifact and upload its file (every 10th round).

It prints, per operation and per group (worker endpoints, client endpoints): count, errors and
p50/p95/p99 latency; noops completed and their created-to-completed p50/p95 from the server's
timestamps; the server's RSS (gunicorn tree) once the workers are connected and at the end; and
the most PostgreSQL connections the instance held at once (sampled every second).
Target (issue 14): p95 <= 25 ms for worker endpoints at 1,000 workers on 2 cores, 0 errors.

Usage: `.venv/bin/python -m bench.load [--workers 1000] [--clients 8] [--seconds 60]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import secrets
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench.common import rss_mib
from debusine.tasks.base import task_version_metadata
from debusine.testing.throwaway import ThrowawayInstance, throwaway_instance

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")

WORKER_OPERATIONS = ("register", "connect", "dynamic-metadata", "get-next", "completed")
#: Measured from the start (the workers' start-up burst), and left out of the worker group.
SETUP_OPERATIONS = ("register", "connect", "dynamic-metadata")
CLIENT_OPERATIONS = ("create", "list", "artifact-create", "upload")
#: Registrations and websocket handshakes in flight at once while the workers start.
STARTUP_CONCURRENCY = 50
UPLOAD_SIZE = 4096


@dataclass
class Recorder:
    """Latencies (seconds) and errors per operation, measured from this side."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: Only what happens while this is True counts (not the start-up phase's setup calls).
    measuring: bool = False

    def record(self, operation: str, started: float, error: str | None = None) -> None:
        if error is not None:
            self.errors[operation].append(error)
        elif self.measuring or operation in SETUP_OPERATIONS:
            self.latencies[operation].append(time.perf_counter() - started)


async def timed(
    recorder: Recorder,
    operation: str,
    request: Any,
    expected: tuple[int, ...],
) -> tuple[int, bytes]:
    """Run one aiohttp request context; record its latency or its error; return status, body."""
    started = time.perf_counter()
    try:
        async with request as response:
            body = await response.read()
    except (TimeoutError, aiohttp.ClientError) as error:
        recorder.record(operation, started, f"{type(error).__name__}: {error}")
        return 0, b""
    if response.status not in expected:
        recorder.record(operation, started, f"HTTP {response.status}: {body[:200]!r}")
    else:
        recorder.record(operation, started)
    return response.status, body


class SimulatedWorker:
    """One worker: a token, a websocket, and answers to the server's frames."""

    def __init__(self, index: int, api_url: str, session: aiohttp.ClientSession) -> None:
        self.index = index
        self.api_url = api_url
        self.session = session
        self.key = secrets.token_hex(32)
        self.headers = {"token": self.key}
        self.completed = 0
        self.websocket: aiohttp.ClientWebSocketResponse | None = None

    async def register(self, recorder: Recorder) -> None:
        await timed(
            recorder,
            "register",
            self.session.post(
                f"{self.api_url}/1.0/worker/register/",
                json={
                    "token": self.key,
                    "fqdn": f"load-{self.index}.example",
                    "worker_type": "external",
                },
            ),
            (201,),
        )

    async def connect(self, recorder: Recorder) -> None:
        started = time.perf_counter()
        url = self.api_url.replace("http", "ws", 1) + "/ws/1.0/worker/connect/"
        try:
            self.websocket = await self.session.ws_connect(url, headers=self.headers)
            frame = json.loads((await self.websocket.receive(timeout=30)).data)
        except (TimeoutError, aiohttp.ClientError, TypeError, ValueError) as error:
            recorder.record("connect", started, f"{type(error).__name__}: {error}")
            return
        if frame.get("text") != "connected":
            recorder.record("connect", started, f"first frame {frame}")
        else:
            recorder.record("connect", started)

    async def run(self, recorder: Recorder, metadata: dict[str, Any]) -> None:
        """Answer the server's frames until the websocket closes."""
        assert self.websocket is not None
        async for message in self.websocket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            text = json.loads(message.data).get("text")
            if text == "request_dynamic_metadata":
                await timed(
                    recorder,
                    "dynamic-metadata",
                    self.session.put(
                        f"{self.api_url}/1.0/worker/dynamic-metadata/",
                        json=metadata,
                        headers=self.headers,
                    ),
                    (204,),
                )
            elif text == "work_request_available":
                await self.fetch_and_complete(recorder)

    async def fetch_and_complete(self, recorder: Recorder) -> None:
        status, body = await timed(
            recorder,
            "get-next",
            self.session.get(
                f"{self.api_url}/1.0/work-request/get-next-for-worker/", headers=self.headers
            ),
            (200, 204),
        )
        if status != 200:
            return
        work_request_id = json.loads(body)["id"]
        await timed(
            recorder,
            "completed",
            self.session.put(
                f"{self.api_url}/1.0/work-request/{work_request_id}/completed/",
                json={"result": "success"},
                headers=self.headers,
            ),
            (200,),
        )
        self.completed += 1


async def client_loop(
    api_url: str, token: str, session: aiohttp.ClientSession, recorder: Recorder, until: float
) -> list[int]:
    """Create noops, list, and upload small artifacts until `until`; return the noops' ids."""
    headers = {"Token": token}
    created: list[int] = []
    rounds = 0
    while time.monotonic() < until:
        rounds += 1
        status, body = await timed(
            recorder,
            "create",
            session.post(
                f"{api_url}/1.0/work-request/",
                json={"task_name": "noop", "task_data": {}},
                headers=headers,
            ),
            (200,),
        )
        if status == 200:
            created.append(json.loads(body)["id"])
        if rounds % 5 == 0:
            await timed(
                recorder,
                "list",
                session.get(f"{api_url}/1.0/work-request/", headers=headers),
                (200,),
            )
        if rounds % 10 == 0:
            await upload_artifact(api_url, headers, session, recorder, rounds)
    return created


async def upload_artifact(
    api_url: str,
    headers: dict[str, str],
    session: aiohttp.ClientSession,
    recorder: Recorder,
    rounds: int,
) -> None:
    content = secrets.token_bytes(UPLOAD_SIZE)
    status, body = await timed(
        recorder,
        "artifact-create",
        session.post(
            f"{api_url}/1.0/artifact/",
            json={
                "category": "debusine:test",
                "data": {},
                "files": {
                    f"load-{rounds}.bin": {
                        "size": len(content),
                        "checksums": {"sha256": hashlib.sha256(content).hexdigest()},
                        "type": "file",
                    }
                },
            },
            headers=headers,
        ),
        (201,),
    )
    if status != 201:
        return
    artifact = json.loads(body)
    for path in artifact.get("files_to_upload", []):
        await timed(
            recorder,
            "upload",
            session.put(
                f"{api_url}/1.0/artifact/{artifact['id']}/files/{path}/",
                data=content,
                headers={
                    **headers,
                    "Content-Range": f"bytes 0-{len(content) - 1}/{len(content)}",
                },
            ),
            (201,),
        )


async def sample_connections(database_url: str, name: str, until: float) -> int:
    """The most connections to the instance's database seen, sampled every second."""
    most = 0
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as connection:
        while time.monotonic() < until:
            cursor = await connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
            )
            row = await cursor.fetchone()
            most = max(most, int(row[0]) - 1 if row else 0)  # not counting this one
            await asyncio.sleep(1)
    return most


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000

    return f"p50 {at(0.50):7.1f}  p95 {at(0.95):7.1f}  p99 {at(0.99):7.1f} ms"


def report(recorder: Recorder) -> None:
    for group, operations in (("worker", WORKER_OPERATIONS), ("client", CLIENT_OPERATIONS)):
        grouped: list[float] = []
        errors = 0
        for operation in operations:
            values = recorder.latencies.get(operation, [])
            failed = recorder.errors.get(operation, [])
            errors += len(failed)
            if operation not in SETUP_OPERATIONS:
                grouped.extend(values)
            print(
                f"  {operation:17} {len(values):7d} ok {len(failed):5d} errors  "
                f"{percentiles(values)}"
            )
            for message in sorted(set(failed))[:3]:
                print(f"      e.g. {message}")
        print(f"  {group + ' endpoints':17} {len(grouped):7d} ok {errors:5d} errors  ", end="")
        print(percentiles(grouped) + ("  (start-up calls not included)" * (group == "worker")))


def completion_latency(database_url: str, ids: list[int]) -> str:
    """Created-to-completed p50/p95 of the noops the clients created, from server timestamps."""
    if not ids:
        return "no noop created"
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT status, EXTRACT(EPOCH FROM completed_at - created_at) FROM db_workrequest"
            " WHERE id = ANY(%s)",
            [ids],
        ).fetchall()
    done = sorted(float(seconds) for status, seconds in rows if status == "completed")
    waiting = len(ids) - len(done)
    if not done:
        return f"0 of {len(ids)} completed"
    p50 = statistics.median(done) * 1000
    p95 = done[min(len(done) - 1, int(len(done) * 0.95))] * 1000
    return (
        f"{len(done)} of {len(ids)} completed ({waiting} not yet), created to completed "
        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms"
    )


async def run_load(server: ThrowawayInstance, token: str, args: argparse.Namespace) -> None:
    metadata: dict[str, Any] = {
        "system:worker_type": "external",
        "system:architectures": ["amd64"],
        "system:host_architecture": "amd64",
        **task_version_metadata(),
    }
    recorder = Recorder()
    # Idle connections closed before the server closes them (gunicorn's `keepalive`, 2 s):
    # reusing one the server is closing at that moment resets it (no request was lost: the
    # server never read it, but it would count as an error here).
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=1.0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        workers = [
            SimulatedWorker(index, server.api_url, session) for index in range(args.workers)
        ]
        started = time.perf_counter()
        gate = asyncio.Semaphore(STARTUP_CONCURRENCY)

        async def gated(coroutine: Any) -> None:
            async with gate:
                await coroutine

        await asyncio.gather(*(gated(worker.register(recorder)) for worker in workers))
        with psycopg.connect(server.database_url, autocommit=True) as connection:
            connection.execute(
                "UPDATE db_token SET enabled = true FROM db_worker"
                " WHERE db_worker.token_id = db_token.id"
            )
        await asyncio.gather(*(gated(worker.connect(recorder)) for worker in workers))
        connected = [worker for worker in workers if worker.websocket is not None]
        print(
            f"{len(connected)} of {args.workers} workers registered and connected in "
            f"{time.perf_counter() - started:.1f} s"
        )
        loops = [asyncio.create_task(worker.run(recorder, metadata)) for worker in connected]
        await asyncio.sleep(2)  # their metadata uploads, before measuring
        rss_start = rss_mib(server.pid)

        recorder.measuring = True
        until = time.monotonic() + args.seconds
        name = psycopg.conninfo.conninfo_to_dict(server.database_url).get("dbname", "")
        sampler = asyncio.create_task(sample_connections(server.database_url, str(name), until))
        clients = [
            client_loop(server.api_url, token, session, recorder, until)
            for _ in range(args.clients)
        ]
        created = [wr for ids in await asyncio.gather(*clients) for wr in ids]
        most_connections = await sampler
        await asyncio.sleep(2)  # the last noops' completions
        recorder.measuring = False
        rss_end = rss_mib(server.pid)

        for worker in connected:
            assert worker.websocket is not None
            await worker.websocket.close()
        for loop in loops:
            loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*loops, return_exceptions=True)

    busy = sum(1 for worker in connected if worker.completed)
    print(f"{args.clients} clients for {args.seconds} s; {busy} workers ran at least one noop")
    report(recorder)
    print(f"  noops: {completion_latency(server.database_url, created)}")
    print(
        f"  server RSS (gunicorn tree): {rss_start:.0f} MiB connected,"
        f" {rss_end:.0f} MiB at the end"
    )
    print(f"  PostgreSQL connections of the instance, at most: {most_connections}")


def raise_open_files_limit() -> int:
    """Raise this process's (and so the server's) open files limit to its hard maximum."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=1000, help="simulated workers")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client loops")
    parser.add_argument("--seconds", type=float, default=60, help="how long the clients run")
    parser.add_argument(
        "--server-workers", type=int, default=2 * (os.cpu_count() or 1) + 1, help="uvicorn workers"
    )
    args = parser.parse_args()
    limit = raise_open_files_limit()
    if limit < 4 * args.workers:
        parser.error(f"the open files limit is {limit}: too low for {args.workers} workers")

    with (
        tempfile.TemporaryDirectory(prefix="debusine-bench-load-") as work,
        throwaway_instance(
            postgres_url=POSTGRES_URL,
            redis_url=REDIS_URL,
            data_dir=Path(work),
            name_prefix="debusine_bench_load",
            workers=args.server_workers,
            scheduling=True,
        ) as server,
    ):
        token = server.create_contributor("bench")
        print(f"{args.server_workers} server workers, {os.cpu_count()} cores")
        asyncio.run(run_load(server, token, args))


if __name__ == "__main__":
    main()
