"""
Dispatch latency: from a work request's creation to its worker hearing about it.

Starts a real server (gunicorn + uvicorn), the scheduler (Celery) and beat on a throwaway
database, connects `--workers` protocol-level workers (websocket + REST, in this process, no
task execution), then creates noop work requests one after another through the API. For each
it records when the `work_request_available` frame reached a worker, measured from the moment
the create request was sent and from the moment its 200 answer arrived; the worker then
fetches and completes the work request at once, which gives the created-to-completed time of
the server side alone.

Runs with 1 and with 50 connected workers by default, each with the scheduling pass run by the
process that created the work request (DEBUSINE_SCHEDULER_PASS_IN_PROCESS, the default) and by
the scheduler process (through Redis and Celery). Target (issue 3): p99 <= 100 ms.

Usage: `.venv/bin/python -m bench.dispatch [--workers 1 50] [--requests 200]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from debusine.testing.throwaway import ThrowawayInstance, throwaway_instance

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Timings:
    from_send: list[float] = field(default_factory=list)
    from_answer: list[float] = field(default_factory=list)
    completed: list[float] = field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def describe(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1000:6.1f} ms  "
        f"p99 {percentile(values, 0.99) * 1000:6.1f} ms  max {max(values) * 1000:6.1f} ms"
    )


class BenchWorker:
    """A protocol-level worker: fetches and completes whatever it is told about."""

    def __init__(self, session: aiohttp.ClientSession, api_url: str, key: str) -> None:
        self.session = session
        self.api_url = api_url
        self.headers = {"token": key}
        self.notified: asyncio.Queue[float] = asyncio.Queue()
        self.completed: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        url = self.api_url.replace("http", "ws", 1) + "/ws/1.0/worker/connect/"
        async with self.session.ws_connect(url, headers=self.headers) as websocket:
            async for message in websocket:
                frame = json.loads(message.data)
                if frame.get("text") == "request_dynamic_metadata":
                    async with self.session.put(
                        f"{self.api_url}/1.0/worker/dynamic-metadata/",
                        json={"noop:version": 1},
                        headers=self.headers,
                    ) as response:
                        assert response.status == 204
                    self.ready.set()
                elif frame.get("text") == "work_request_available":
                    self.notified.put_nowait(loop.time())
                    await self.fetch_and_complete()

    async def fetch_and_complete(self) -> None:
        async with self.session.get(
            f"{self.api_url}/1.0/work-request/get-next-for-worker/", headers=self.headers
        ) as response:
            if response.status != 200:
                return
            work_request = await response.json()
        async with self.session.put(
            f"{self.api_url}/1.0/work-request/{work_request['id']}/completed/",
            json={"result": "success"},
            headers=self.headers,
        ) as response:
            assert response.status == 200
        self.completed.put_nowait((work_request["id"], asyncio.get_running_loop().time()))


async def measure(
    instance: ThrowawayInstance, user_token: str, workers: int, count: int, mode: str
) -> None:
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bench_workers = []
        for index in range(workers):
            activation = instance.create_worker_activation(f"bench-{workers}-{index}.example")
            key = secrets.token_hex(32)
            async with session.post(
                f"{instance.api_url}/1.0/worker/register/",
                json={"token": key, "fqdn": "bench.example"},
                headers={"token": activation},
            ) as response:
                assert response.status == 201
            bench_workers.append(BenchWorker(session, instance.api_url, key))
        tasks = [asyncio.create_task(worker.run()) for worker in bench_workers]
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in bench_workers)), 60)
        await asyncio.sleep(1)

        any_notification: asyncio.Queue[float] = asyncio.Queue()
        any_completion: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

        async def forward(worker: BenchWorker) -> None:
            while True:
                any_notification.put_nowait(await worker.notified.get())

        async def forward_completions(worker: BenchWorker) -> None:
            while True:
                any_completion.put_nowait(await worker.completed.get())

        forwarders = [asyncio.create_task(forward(worker)) for worker in bench_workers] + [
            asyncio.create_task(forward_completions(worker)) for worker in bench_workers
        ]
        timings = Timings()
        headers = {"Token": user_token}
        for _ in range(count):
            sent = loop.time()
            async with session.post(
                f"{instance.api_url}/1.0/work-request/",
                json={"task_name": "noop", "task_data": {}},
                headers=headers,
            ) as response:
                assert response.status == 200
                work_request_id = (await response.json())["id"]
            answered = loop.time()
            notified = await asyncio.wait_for(any_notification.get(), 30)
            timings.from_send.append(notified - sent)
            timings.from_answer.append(max(0.0, notified - answered))
            # Wait for its completion, then keep the system idle for a moment.
            completed_id, completed_at = await asyncio.wait_for(any_completion.get(), 30)
            assert completed_id == work_request_id
            timings.completed.append(completed_at - sent)
            await asyncio.sleep(0.02)
        for task in [*tasks, *forwarders]:
            task.cancel()
        await asyncio.gather(*tasks, *forwarders, return_exceptions=True)

    print(f"{workers:3d} connected worker(s), {count} work requests, one at a time, {mode}:")
    print(f"  created (request sent)  -> worker notified   {describe(timings.from_send)}")
    print(f"  created (200 received)  -> worker notified   {describe(timings.from_answer)}")
    print(f"  created (request sent)  -> completed (*)     {describe(timings.completed)}")
    print("  (*) protocol-level worker: get-next + completed (200 received), no task run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--server-workers", type=int, default=0)
    args = parser.parse_args()
    server_workers = args.server_workers or 2 * (os.cpu_count() or 1) + 1
    modes = {
        "pass in the creating process": "true",
        "pass in the scheduler process": "false",
    }
    for workers in args.workers:
        for mode, in_process in modes.items():
            with (
                tempfile.TemporaryDirectory() as data_dir,
                throwaway_instance(
                    postgres_url=POSTGRES_URL,
                    redis_url=REDIS_URL,
                    data_dir=Path(data_dir),
                    name_prefix="bench_dispatch",
                    workers=server_workers,
                    scheduling=True,
                    settings={"DEBUSINE_SCHEDULER_PASS_IN_PROCESS": in_process},
                ) as instance,
            ):
                user_token = instance.create_contributor("bench")
                asyncio.run(measure(instance, user_token, workers, args.requests, mode))


if __name__ == "__main__":
    main()
