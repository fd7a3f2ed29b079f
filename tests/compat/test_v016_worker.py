"""
Debian's `debusine-worker` 0.16 (trixie-backports, run in a trixie root) against our server with
its real scheduler, alone and side by side with a 0.11.3 worker.

0.16 asks for work with a POST, reads tag-based metadata, rejects task data of the 0.11/0.12
shape (a noop `result` must be a result string there) and runs its task with the token and
scope of the get-next answer: a noop that reaches `success` or `failure` (not an error with
`configure-failed`) shows all of that works, and its debug-log artifact that the task's own
credentials work for artifact creation and upload.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from debusine.testing.reference_client import ReferenceWorker
from debusine.testing.reference_v016 import (
    ReferenceV016Error,
    V016Root,
    start_v016_worker,
    v016_root,
)
from debusine.testing.reference_worker import LOG_CONNECTED, start_reference_worker
from debusine.testing.throwaway import ThrowawayInstance
from debusine.testing.worker import WorkerProcess
from tests.integration.client_cli import configured_cli
from tests.integration.conftest import scheduling_instance
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.compat

V016_NAME = "new-example-org"
V011_NAME = "old-example-org"


@pytest.fixture(scope="module")
def installed_v016() -> V016Root:
    try:
        return v016_root()
    except ReferenceV016Error as error:
        pytest.fail(f"cannot build the Debusine 0.16 root: {error}", pytrace=False)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[ThrowawayInstance]:
    with scheduling_instance(tmp_path_factory, f"v016_worker_{worker_id}") as running:
        yield running


@pytest.fixture(scope="module")
def user(server: ThrowawayInstance) -> RestUser:
    return RestUser(server, server.create_contributor("v016-worker-user"))


def worker_row(server: ThrowawayInstance, name: str) -> dict[str, Any]:
    rows = yaml.safe_load(server.admin("worker", "list", "--yaml")) or []
    [row] = [row for row in rows if row["name"] == name]
    return dict(row)


def worker_pk(server: ThrowawayInstance, name: str) -> int:
    """The worker's id, as work requests name it (`worker list` shows names only)."""
    return int(
        server.admin(
            "shell",
            "-c",
            "from debusine.server.db.models import Worker; "
            f"print(Worker.objects.get(name={name!r}).pk)",
        )
        .strip()
        .splitlines()[-1]
    )


def wait_for_metadata(server: ThrowawayInstance, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = worker_row(server, name)
        if (row["connected_at"] and row["dynamic_metadata"]) or time.monotonic() > deadline:
            assert row["connected_at"] and row["dynamic_metadata"], row
            return row
        time.sleep(0.3)


def stop(worker: WorkerProcess) -> None:
    still_running = worker.process.poll() is None
    worker.stop()
    assert still_running, f"the worker had exited:\n{worker.log_text()[-3000:]}"


@pytest.fixture(scope="module")
def new_worker(
    server: ThrowawayInstance,
    installed_v016: V016Root,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    activation = server.create_worker_activation("new.example.org")
    worker = start_v016_worker(
        installed_v016,
        server.api_url,
        tmp_path_factory.mktemp("v016-worker"),
        activation_token=activation,
    )
    try:
        wait_for_metadata(server, V016_NAME)
        yield worker
    except BaseException:
        print(worker.log_text()[-5000:])
        raise
    finally:
        stop(worker)


def test_metadata_is_tag_based(server: ThrowawayInstance, new_worker: WorkerProcess) -> None:
    metadata = worker_row(server, V016_NAME)["dynamic_metadata"]
    assert "worker:task:worker:noop:version:1" in metadata["provided_tags"]
    assert metadata["system:worker_version"].startswith("0.16")
    assert "noop:version" not in metadata


def completed_on(user: RestUser, work_request_id: int) -> dict[str, Any]:
    done: dict[str, Any] = user.wait_until(work_request_id, "completed", timeout=90)
    return done


def test_noop_success_and_failure(
    server: ThrowawayInstance, user: RestUser, new_worker: WorkerProcess, tmp_path: Path
) -> None:
    worker_id = worker_pk(server, V016_NAME)
    success = completed_on(user, user.create("noop", {"result": True}))
    failure = completed_on(user, user.create("noop", {"result": False}))

    assert success["result"] == "success", (success, new_worker.log_text()[-3000:])
    assert failure["result"] == "failure", (failure, new_worker.log_text()[-3000:])
    for done in (success, failure):
        assert done["worker"] == worker_id
        errors = (done.get("output_data") or {}).get("errors") or []
        assert not errors, errors
        # The debug-log artifact, created and uploaded with the task's token and scope.
        [artifact_id] = done["artifacts"]
        artifact = user.call("GET", f"/1.0/artifact/{artifact_id}/")
        assert artifact["category"] == "debusine:work-request-debug-logs"
        assert artifact["files_to_upload"] == []
        # Its `log_data` frames (the task's stages, stream `internal`) are its live log.
        frames = live_log(user, done["id"])
        assert frames, new_worker.log_text()[-3000:]
        assert {frame["type"] for frame in frames} <= {"log_data", "log_data_end"}
        assert all(frame["work_request_id"] == done["id"] for frame in frames)
        assert any(frame.get("stream") == "internal" for frame in frames), frames
    assert new_worker.process.poll() is None

    # Our client prints that live log, then stops: the work request has finished.
    token = user.session.headers["Token"]
    assert isinstance(token, str)
    cli = configured_cli(tmp_path / "home", server.api_url, token)
    followed = cli.ok("show-work-request", "--follow", str(failure["id"]))
    internal = [frame["data"] for frame in live_log(user, failure["id"])]
    assert "".join(f"# {line}\n" for line in "".join(internal).splitlines()) in followed.stdout


def live_log(user: RestUser, work_request_id: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The work request's live log, once it has frames (they may trail the completion)."""
    deadline = time.monotonic() + timeout
    while True:
        page = user.call("GET", f"/1.0/work-request/{work_request_id}/live-log/")
        if page["frames"] or time.monotonic() > deadline:
            assert page["next"] == len(page["frames"])
            frames: list[dict[str, Any]] = page["frames"]
            return frames
        time.sleep(0.3)


def test_old_and_new_workers_side_by_side(
    server: ThrowawayInstance,
    user: RestUser,
    new_worker: WorkerProcess,
    installed_reference_worker: ReferenceWorker,
    tmp_path: Path,
) -> None:
    activation = server.create_worker_activation("old.example.org")
    old_worker = start_reference_worker(
        installed_reference_worker, server.api_url, tmp_path, activation_token=activation
    )
    try:
        old_worker.wait_for_log(LOG_CONNECTED, timeout=60)
        wait_for_metadata(server, V011_NAME)
        ids = {
            worker_pk(server, V016_NAME): V016_NAME,
            worker_pk(server, V011_NAME): V011_NAME,
        }
        # Enough at once that both idle workers are given some.
        created = [user.create("noop", {"result": index % 2 == 0}) for index in range(6)]
        done = [completed_on(user, work_request_id) for work_request_id in created]
    finally:
        stop(old_worker)

    ran_on = {ids[entry["worker"]] for entry in done}
    assert ran_on == {V016_NAME, V011_NAME}, done
    for index, entry in enumerate(done):
        # Each ran with task data its generation accepts: nothing failed configure.
        assert entry["result"] == ("success" if index % 2 == 0 else "failure"), entry
        assert not (entry.get("output_data") or {}).get("errors"), entry
