"""
How long a burst waits for the first worker of an empty `local` pool: from the moment 10
`sleep` work requests are created to the moment the first one runs.

Starts a throwaway instance (server, scheduler) on the configured PostgreSQL and Redis, a pool
of the `local` provider (at most 4 instances, none at rest) and a `debusine-admin provisioner
run --interval 0.5` process; creates the burst through the REST API and polls it. The time
covers the provisioner's pass, the worker process's start, its registration and connection,
and the scheduling pass that gives it the work request. Every process started is stopped by PID.

Usage: `.venv/bin/python -m bench.pool_burst [--runs 3]`
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from debusine.server.db.worker_pool_specs import LocalSpecification
    from debusine.server.worker_pools.providers.local import LocalProvider
    from debusine.testing.throwaway import throwaway_instance

    with tempfile.TemporaryDirectory(prefix="bench-pool-burst-") as directory:
        data_dir = Path(directory)
        with throwaway_instance(
            postgres_url=POSTGRES_URL,
            redis_url=REDIS_URL,
            data_dir=data_dir,
            name_prefix="bench_pool_burst",
            scheduling=True,
        ) as instance:
            token = instance.create_contributor("bench")
            instance.admin("asset", "create_cloud_provider_account", "here", "local")
            spec = LocalSpecification(
                api_url=instance.api_url, home_directory=str(data_dir / "homes")
            )
            for run in range(args.runs):
                pool = f"burst{run}-{os.getpid()}"
                (data_dir / "spec.json").write_text(spec.model_dump_json())
                (data_dir / "limits.json").write_text(
                    json.dumps({"max_active_instances": 4, "max_idle_seconds": 1})
                )
                instance.admin(
                    "worker_pool", "create", pool, "--provider-account", "here",
                    "--architectures", "amd64", "--specifications", str(data_dir / "spec.json"),
                    "--limits", str(data_dir / "limits.json"),
                )  # fmt: skip
                provisioner = subprocess.Popen(
                    [
                        sys.executable, "-m", "debusine.server.management.main",
                        "provisioner", "run", "--interval", "0.5",
                    ],
                    env=instance.environment,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    session = requests.Session()
                    session.headers["Token"] = token
                    url = f"{instance.api_url}/1.0/work-request/"
                    started = time.perf_counter()
                    ids = [
                        session.post(
                            url,
                            json={"task_name": "sleep", "task_data": {"seconds": 1}},
                            timeout=30,
                        ).json()["id"]
                        for _ in range(10)
                    ]
                    first = None
                    while first is None and time.perf_counter() - started < 300:
                        for work_request in ids:
                            answer = session.get(f"{url}{work_request}/", timeout=30).json()
                            if answer["status"] in ("running", "completed"):
                                first = time.perf_counter() - started
                                break
                        time.sleep(0.05)
                    label = f"run {run + 1}: burst of 10 to the first started work request"
                    print(f"{label:64} {first if first is not None else float('nan'):6.2f} s")
                finally:
                    provisioner.send_signal(signal.SIGTERM)
                    provisioner.wait(timeout=30)
                    instance.admin("worker_pool", "disable", pool)
                    provider = LocalProvider(spec, data_dir=str(data_dir))
                    for leftover in provider.list_running(pool):
                        provider.terminate(leftover.instance_id)


if __name__ == "__main__":
    main()
