"""
A real `debusine-worker` process registering with a real server (gunicorn + uvicorn, PostgreSQL,
Redis): refused while disabled, accepted once `debusine-admin worker enable` ran; registered
and accepted at once with an activation token from `debusine-admin worker create`.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from debusine.testing.worker import LOG_CONNECTED, LOG_REJECTED, start_worker
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.integration


def worker_row(server: LiveServer) -> dict[str, Any]:
    """The worker's row of `debusine-admin worker list --yaml` once its metadata arrived."""
    deadline = time.monotonic() + 20
    while True:
        rows = yaml.safe_load(server.admin("worker", "list", "--yaml")) or []
        mine = [row for row in rows if row["dynamic_metadata"].get("noop:version") is not None]
        fresh = [row for row in mine if row["connected_at"] is not None]
        # The rows do not show the token; the newest connected worker with metadata is ours.
        if fresh or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert fresh, f"no connected worker with metadata: {rows}"
    return max(fresh, key=lambda row: row["dynamic_metadata_updated_at"])


def test_disabled_worker_is_refused_until_enabled(
    debusine_server: LiveServer, tmp_path: Path
) -> None:
    worker = start_worker(debusine_server.api_url, tmp_path)
    try:
        worker.wait_for_log(LOG_REJECTED, count=2)
        assert LOG_CONNECTED not in worker.log_text()
        token = worker.token
        assert token is not None
        token_file = worker.config_dir / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

        debusine_server.admin("worker", "enable", token)
        worker.wait_for_log(LOG_CONNECTED, timeout=20)
        assert worker.process.poll() is None
        metadata = worker_row(debusine_server)["dynamic_metadata"]
        assert metadata["system:worker_type"] == "external"
        assert metadata["sleep:version"] == 1
        assert metadata["system:host_architecture"] in metadata["system:architectures"]
    finally:
        assert worker.stop() == 0
    assert "stopped" in worker.log_text()


def test_activation_token_registers_an_enabled_worker(
    debusine_server: LiveServer, tmp_path: Path
) -> None:
    fqdn = f"activated-{tmp_path.name}.example.org"
    activation_token = debusine_server.instance.create_worker_activation(fqdn)
    worker = start_worker(debusine_server.api_url, tmp_path, activation_token=activation_token)
    try:
        worker.wait_for_log(LOG_CONNECTED, timeout=20)
        assert LOG_REJECTED not in worker.log_text()
        assert worker.token is not None
        assert worker.token != activation_token
        assert "with an activation token" in worker.log_text()
    finally:
        assert worker.stop() == 0
