"""
A real `debusine-worker` running as the dedicated unprivileged user `debusine-worker`, as
production workers do (sbuild in unshare mode refuses root): it runs from `worker_venv()`,
registers, reports that the unshare executor works for it, and runs a noop.
"""

from __future__ import annotations

import os
import pwd
import time
from typing import Any

import pytest
import yaml

from debusine.testing.throwaway import ThrowawayInstance
from debusine.testing.worker import LOG_CONNECTED, ensure_worker_user, start_worker
from tests.integration.rest_user import RestUser

WORKER_USER = "debusine-worker"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a worker as another user"),
]


def worker_entry(instance: ThrowawayInstance, name: str, timeout: float = 30) -> dict[str, Any]:
    """The `worker list` entry of `name`, once it has sent its dynamic metadata."""
    deadline = time.monotonic() + timeout
    while True:
        workers = yaml.safe_load(instance.admin("worker", "list", "--yaml"))
        entry = next((worker for worker in workers if worker["name"] == name), None)
        if entry is not None and entry["dynamic_metadata"]:
            return dict(entry)
        assert time.monotonic() < deadline, f"no metadata from {name}: {workers}"
        time.sleep(0.2)


def test_worker_as_a_dedicated_user(instance: ThrowawayInstance, tmp_path: Any) -> None:
    account = ensure_worker_user(WORKER_USER)
    # Idempotent: a second call changes nothing.
    assert ensure_worker_user(WORKER_USER) == account
    activation = instance.create_worker_activation("as-user.example")
    worker = start_worker(
        instance.api_url, tmp_path, activation_token=activation, user=WORKER_USER
    )
    try:
        worker.wait_for_log(LOG_CONNECTED, timeout=60)
        # The daemon process itself runs as the user (what `whoami` in a task would say).
        assert worker.uid() == account.pw_uid
        assert pwd.getpwuid(worker.uid()).pw_name == WORKER_USER
        assert worker.private_directory is not None
        assert worker.config_dir.is_relative_to(worker.private_directory)
        assert (worker.config_dir / "token").stat().st_uid == account.pw_uid
        assert (
            f"cache-dir = {worker.private_directory / 'cache'}"
            in (worker.config_dir / "config.ini").read_text()
        )

        metadata = worker_entry(instance, "as-user-example")["dynamic_metadata"]
        assert metadata["executor:unshare:available"] is True
        assert metadata["noop:version"] == 1

        user = RestUser(instance, instance.create_contributor("as-user-owner"))
        work_request_id = user.create("noop", {"result": True})
        done = user.wait_until(work_request_id, "completed", timeout=60)
        assert done["result"] == "success"
        worker.wait_for_log(f"work request {work_request_id}: success", timeout=10)
    finally:
        private = worker.private_directory
        assert worker.stop() == 0
    # Stopping keeps the log next to worker.out and removes the user's directory.
    assert worker.log_file == tmp_path / "worker.log"
    assert LOG_CONNECTED in worker.log_text()
    assert private is not None and not private.exists()
