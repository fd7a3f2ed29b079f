"""
What the worker daemon itself costs per work request, without a server in the way.

1. Fork overhead: a noop run through `TaskProcess` (fork, run the stages in the child, reap)
   against the same noop's `execute()` in the calling process; the difference is what running
   each task in its own process costs.
2. Daemon throughput: a real daemon against the scripted stub server of the unit tests, which
   announces the next noop as soon as the previous one is reported; noops per second through
   the whole loop (announcement, get-next, fork, completion), i.e. the worker's ceiling.

Usage: `.venv/bin/python -m bench.worker_tasks [--runs 500] [--work-requests 2000]`
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from debusine.tasks import Noop, TaskContext
from debusine.testing.stub_server import StubServer, work_request
from debusine.testing.worker import write_worker_config
from debusine.worker.config import load_config
from debusine.worker.daemon import WorkerDaemon
from debusine.worker.runner import TaskProcess, TaskResult


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def fork_overhead(runs: int, directory: Path) -> None:
    in_process: list[float] = []
    forked: list[float] = []
    for _run in range(runs):
        context = TaskContext.create(1, "System", parent=directory)
        started = time.perf_counter()
        assert Noop({}).execute(context)
        in_process.append(time.perf_counter() - started)

        context = TaskContext.create(1, "System", parent=directory)
        started = time.perf_counter()
        outcome = await TaskProcess.start(Noop({}), context).wait()
        forked.append(time.perf_counter() - started)
        assert outcome.result is TaskResult.SUCCESS
    overhead = statistics.median(forked) - statistics.median(in_process)
    print(f"noop in process : p50 {statistics.median(in_process) * 1000:.2f} ms")
    print(
        f"noop forked     : p50 {statistics.median(forked) * 1000:.2f} ms, "
        f"p99 {percentile(forked, 0.99) * 1000:.2f} ms"
    )
    print(f"fork overhead   : {overhead * 1000:.2f} ms per task (p50 difference, {runs} runs)")


async def daemon_throughput(count: int, directory: Path) -> None:
    stub = StubServer(announce_after_completion=True)
    await stub.start()
    config_dir = write_worker_config(directory / "config", stub.api_url, token="a" * 64)
    daemon = WorkerDaemon(load_config(config_dir))
    run = asyncio.create_task(daemon.run())
    try:
        await stub.next_event("connected")
        stub.work_requests.extend(work_request(i, "noop", {}) for i in range(1, count + 1))
        started = time.perf_counter()
        await stub.send({"type": "websocket.send", "text": "work_request_available"})
        done = 0
        while done < count:
            kind, _event = await stub.next_event("completed", timeout=60)
            done += kind == "completed"
        elapsed = time.perf_counter() - started
    finally:
        daemon.request_stop()
        await run
        await stub.stop()
    print(
        f"daemon loop     : {count} noops in {elapsed:.2f} s = {count / elapsed:.0f}/s "
        f"({elapsed / count * 1000:.2f} ms each, stub server in the same process)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--work-requests", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(fork_overhead(args.runs, Path(directory)))
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(daemon_throughput(args.work_requests, Path(directory)))


if __name__ == "__main__":
    main()
