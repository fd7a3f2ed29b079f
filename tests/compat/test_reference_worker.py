"""
Debian's real `debusine-worker` 0.11.3 daemon against our server with its real scheduler.

The daemon registers (disabled, then enabled with `debusine-admin worker enable`, or enabled
at once with an activation token), sends its dynamic metadata, runs noop work requests to
success and failure with their debug-log artifacts, and survives the abort of a work request
it is running: 0.11.3 knows nothing of our `work_request_aborted` frame, so it reports a
completion the server must ignore with a 200.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from debusine.testing.reference_client import ReferenceWorker
from debusine.testing.reference_worker import (
    LOG_CONNECTED,
    LOG_METADATA_SENT,
    LOG_TOKEN_DISABLED,
    start_reference_worker,
)
from debusine.testing.throwaway import ThrowawayInstance
from debusine.testing.worker import WorkerProcess
from tests.compat.holding_proxy import HoldingProxy
from tests.integration.conftest import scheduling_instance
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.compat

NOOP_VERSION = 1  # TASK_VERSION of noop, in 0.11.3 and in ours


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[ThrowawayInstance]:
    """Our server with its scheduler and beat, for this module's workers only."""
    with scheduling_instance(tmp_path_factory, f"reference_worker_{worker_id}") as running:
        yield running


@pytest.fixture(scope="module")
def user(server: ThrowawayInstance) -> RestUser:
    return RestUser(server, server.create_contributor("reference-worker-user"))


def worker_row(server: ThrowawayInstance, name: str) -> dict[str, Any]:
    """The worker's row of `debusine-admin worker list --yaml`."""
    rows = yaml.safe_load(server.admin("worker", "list", "--yaml")) or []
    [row] = [row for row in rows if row["name"] == name]
    return dict(row)


def wait_for_metadata(server: ThrowawayInstance, name: str, timeout: float = 30) -> dict[str, Any]:
    """The row of worker `name` once it is connected and its dynamic metadata is stored."""
    deadline = time.monotonic() + timeout
    while True:
        row = worker_row(server, name)
        if (row["connected_at"] and row["dynamic_metadata"]) or time.monotonic() > deadline:
            assert row["connected_at"] and row["dynamic_metadata"], row
            return row
        time.sleep(0.2)


def completion_answer(work_request_id: int) -> str:
    """The daemon's (urllib3's) log line for a completion answered 200 with an empty body."""
    return f'"PUT /api/1.0/work-request/{work_request_id}/completed/ HTTP/1.1" 200 0'


def stop(worker: WorkerProcess) -> None:
    """Stop the daemon by PID; it must still have been running (it never exits on its own)."""
    still_running = worker.process.poll() is None
    worker.stop()
    assert still_running, f"the reference worker had exited:\n{worker.log_text()[-3000:]}"


def host_architecture() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_registers_disabled_then_is_accepted_once_enabled(
    server: ThrowawayInstance, installed_reference_worker: ReferenceWorker, tmp_path: Path
) -> None:
    worker = start_reference_worker(installed_reference_worker, server.api_url, tmp_path)
    try:
        # Registration answered 201 (anything else makes it exit with 3): it saved its token,
        # and its websocket is refused with TOKEN_DISABLED, again and again.
        # (The daemon logs that line only for a rejection whose reason_code is TOKEN_DISABLED.)
        worker.wait_for_log(LOG_TOKEN_DISABLED, count=2, timeout=40)
        assert LOG_CONNECTED not in worker.log_text()
        token = worker.token
        assert token is not None and len(token) == 64
        assert stat.S_IMODE((worker.config_dir / "token").stat().st_mode) == 0o600

        enabled = server.admin("worker", "enable", token).strip()
        name = enabled.removeprefix("Enabled worker ")
        worker.wait_for_log(LOG_CONNECTED, timeout=20)
        worker.wait_for_log(LOG_METADATA_SENT, timeout=20)
        row = wait_for_metadata(server, name)
    finally:
        stop(worker)

    assert row["enabled"] is True
    assert row["worker_type"] == "external"
    metadata = row["dynamic_metadata"]
    assert metadata["system:worker_type"] == "external"
    assert metadata["system:cpu_count"] == os.cpu_count()
    assert metadata["system:total_physical_memory"] > 0
    assert metadata["noop:version"] == NOOP_VERSION
    assert metadata["system:host_architecture"] == host_architecture()
    # arch-test ran on this host: it always finds the native architecture.
    assert host_architecture() in metadata["system:architectures"]
    assert isinstance(metadata["executor:unshare:available"], bool)
    assert "Sent dynamic_metadata (response: 204)" in worker.log_text()


def test_activation_token_gives_an_enabled_worker_at_once(
    server: ThrowawayInstance, installed_reference_worker: ReferenceWorker, tmp_path: Path
) -> None:
    fqdn = "activated.example.org"
    activation_token = server.create_worker_activation(fqdn)
    worker = start_reference_worker(
        installed_reference_worker, server.api_url, tmp_path, activation_token=activation_token
    )
    try:
        worker.wait_for_log(LOG_CONNECTED, timeout=30)
        worker.wait_for_log(LOG_METADATA_SENT, timeout=20)
        row = wait_for_metadata(server, fqdn.replace(".", "-"))
        assert LOG_TOKEN_DISABLED not in worker.log_text()
        assert worker.token is not None
        assert worker.token != activation_token
    finally:
        stop(worker)
    assert row["enabled"] is True
    assert row["dynamic_metadata"]["noop:version"] == NOOP_VERSION


@pytest.fixture(scope="module")
def proxy(server: ThrowawayInstance) -> Iterator[HoldingProxy]:
    """A transparent loopback proxy in front of the server, which can hold completions back."""
    port = int(server.base_url.rsplit(":", 1)[1])
    with HoldingProxy(port) as running:
        yield running


@pytest.fixture(scope="module")
def running_worker(
    server: ThrowawayInstance,
    installed_reference_worker: ReferenceWorker,
    proxy: HoldingProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """An enabled reference worker, talking to the server through `proxy`."""
    activation = server.create_worker_activation("runner.example.org")
    worker = start_reference_worker(
        installed_reference_worker,
        f"{proxy.url}/api",
        tmp_path_factory.mktemp("reference-worker"),
        activation_token=activation,
    )
    try:
        worker.wait_for_log(LOG_CONNECTED, timeout=30)
        wait_for_metadata(server, "runner-example-org")
        yield worker
    finally:
        stop(worker)


def debug_log_artifact(user: RestUser, work_request: dict[str, Any]) -> dict[str, Any]:
    [artifact_id] = work_request["artifacts"]
    artifact: dict[str, Any] = user.call("GET", f"/1.0/artifact/{artifact_id}/")
    assert artifact["category"] == "debusine:work-request-debug-logs"
    assert artifact["workspace"] == work_request["workspace"]
    assert artifact["files_to_upload"] == []
    return artifact


def test_noop_success_completes_with_an_empty_debug_log(
    user: RestUser, running_worker: WorkerProcess
) -> None:
    work_request_id = user.create("noop", {"result": True})
    done = user.wait_until(work_request_id, "completed")
    assert done["result"] == "success"
    # On success the daemon deletes stages.log before uploading: the artifact has no file.
    assert debug_log_artifact(user, done)["files"] == {}
    running_worker.wait_for_log(completion_answer(work_request_id), timeout=10)
    assert running_worker.process.poll() is None


def test_noop_failure_completes_with_its_stages_log(
    user: RestUser, running_worker: WorkerProcess
) -> None:
    work_request_id = user.create("noop", {"result": False})
    done = user.wait_until(work_request_id, "completed")
    assert done["result"] == "failure"
    stages = debug_log_artifact(user, done)["files"]["stages.log"]
    # (0.11.3 declares no content type for its files; later versions do.)
    contents = user.session.get(stages["url"], timeout=30)
    assert contents.status_code == 200
    assert len(contents.content) == stages["size"]
    # The stages the daemon went through, up to the run that returned False.
    assert "Running" in contents.text
    assert "Cleaning up" in contents.text
    running_worker.wait_for_log(completion_answer(work_request_id), timeout=10)
    assert running_worker.process.poll() is None


def test_abort_of_a_running_work_request_leaves_the_worker_running(
    user: RestUser, running_worker: WorkerProcess, proxy: HoldingProxy
) -> None:
    # The noop itself takes milliseconds: its completion is held back at the proxy so that the
    # work request is still running on the server when it is aborted.
    proxy.hold(b"/completed/ HTTP/1.1")
    try:
        work_request_id = user.create("noop", {"result": True})
        assert proxy.wait_until_held(timeout=30), running_worker.log_text()[-3000:]
        assert user.wait_until(work_request_id, "running")["worker"] is not None

        aborted = user.call("POST", f"/1.0/work-request/{work_request_id}/abort/", json={})
        assert aborted["status"] == "aborted"
        # Our frame reaches the daemon, which does not know it and only logs it.
        running_worker.wait_for_log("'text': 'work_request_aborted'", timeout=20)
        assert completion_answer(work_request_id) not in running_worker.log_text()
    finally:
        proxy.release()

    # Its stale completion is answered 200 with an empty body and changes nothing; the daemon
    # (which would log "Cannot reach server..." for any other answer) takes the next one.
    running_worker.wait_for_log(completion_answer(work_request_id), timeout=20)
    next_id = user.create("noop", {"result": True})
    assert user.wait_until(next_id, "completed")["result"] == "success"
    running_worker.wait_for_log(completion_answer(next_id), timeout=10)
    assert "Cannot reach server" not in running_worker.log_text()
    after = user.wait_until(work_request_id, "aborted")
    assert after["result"] == ""
    assert after["completed_at"] is None or after["completed_at"] == aborted["completed_at"]
    assert running_worker.process.poll() is None
