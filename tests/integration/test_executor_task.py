"""
ExecutorTask's worker-side helpers against a real server: a task run with a worker token for
a work request assigned to that worker fetches an input artifact, gets its environment (the
real bookworm tarball, uploaded as a `debian:system-tarball`) through the environment cache,
runs a command in it with the unshare executor, logs a host command, and uploads an output
artifact with a relation. About 30 s (upload and extraction of the 137 MiB tarball).
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from debusine.artifacts.local import LocalArtifact, system_tarball
from debusine.artifacts.models import ArtifactCategory, DebianSystemTarball, EmptyArtifactData
from debusine.client.client import DebusineClient, LocalFile
from debusine.tasks import (
    BaseDynamicTaskDataWithExecutor,
    BaseTaskDataWithExecutor,
    TaskContext,
    TaskType,
)
from debusine.tasks.executor_task import ExecutorTask
from debusine.tasks.executors.unshare import unshare_available
from debusine.testing.environments import BUILDD_TARBALL
from debusine.testing.throwaway import ThrowawayInstance
from tests.integration.raw_worker import RawWorker
from tests.integration.rest_user import RestUser

TARBALL = BUILDD_TARBALL

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("buildd_tarball"),
]


class Probe(
    ExecutorTask[BaseTaskDataWithExecutor, BaseDynamicTaskDataWithExecutor], abstract=True
):
    """Uses every helper once (abstract: not registered as a real task)."""

    TASK_TYPE = TaskType.WORKER
    TASK_NAME = "probe"
    TASK_VERSION = 1
    TASK_DATA_MODEL = BaseTaskDataWithExecutor

    input_id: int
    report: dict[str, Any]

    def fetch_input(self, destination: Path) -> bool:
        artifact = self.fetch_artifact(self.input_id, destination / "input")
        self.report["fetched"] = (artifact.category, sorted(artifact.files))
        return True

    def run(self, execute_directory: Path) -> bool:
        executor = self.start_executor()
        self.report["environment"] = self._environments[0]
        version = executor.run(["cat", "/etc/debian_version"], stdout=subprocess.PIPE, text=True)
        self.report["debian_version"] = version.stdout.strip()
        self.report["status"] = self.run_logged(
            ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 4"], "probe.log"
        )
        (execute_directory / "result.txt").write_text(f"built on {version.stdout}")
        return True

    def upload_artifacts(self, directory: Path, *, execution_success: bool) -> None:
        local = LocalArtifact(
            ArtifactCategory.TEST,
            EmptyArtifactData(),
            {"result.txt": directory / "result.txt"},
            {"result.txt": "text/plain; charset=utf-8"},
        )
        self.report["uploaded"] = self.upload_artifact(
            local, relations=[(self.input_id, "relates-to")]
        )


async def assigned_work_request(worker: RawWorker, instance: ThrowawayInstance) -> int:
    """Register `worker`, create a noop and have it assigned to the worker; its ID."""
    activation = instance.create_worker_activation("executor.example")
    assert await worker.register("executor.example", activation_token=activation) == 201
    await worker.connect()
    await worker.wait_for("connected")
    await worker.send_metadata()
    user = RestUser(instance, instance.create_contributor("executor-user"))
    work_request_id = await asyncio.to_thread(user.create, "noop", {})
    await worker.wait_for("work_request_available", timeout=30)
    status, body = await worker.call("GET", "work-request/get-next-for-worker/")
    assert status == 200
    assert body["id"] == work_request_id
    return work_request_id


def test_executor_task_helpers_with_a_real_server(
    instance: ThrowawayInstance, tmp_path: Path
) -> None:
    if not unshare_available():
        pytest.skip("unshare cannot make the namespaces here")
    user_client = DebusineClient(
        instance.api_url, instance.create_contributor("executor-uploader"), "debusine"
    )
    source = tmp_path / "input.txt"
    source.write_text("input\n")
    input_artifact = user_client.artifact_create(
        "debusine:test", {"input.txt": LocalFile.from_path(source)}, {}, workspace="System"
    )
    user_client.upload_artifact_files(input_artifact, {"input.txt": LocalFile.from_path(source)})
    tarball = system_tarball(
        TARBALL,
        DebianSystemTarball(
            filename=TARBALL.name,
            vendor="debian",
            codename="bookworm",
            mirror="http://deb.debian.org/debian",
            variant="buildd",
            pkglist={},
            architecture="amd64",
            with_dev=True,
            with_init=False,
        ),
    )
    tarball_files = {name: LocalFile.from_path(path) for name, path in tarball.files.items()}
    environment = user_client.artifact_create(
        str(tarball.category), tarball_files, tarball.data_json(), workspace="System"
    )
    user_client.upload_artifact_files(environment, tarball_files)

    report: dict[str, Any] = {}

    async def scenario() -> TaskContext:
        async with RawWorker(instance.api_url) as worker:
            work_request_id = await assigned_work_request(worker, instance)
            context = TaskContext.create(
                work_request_id,
                "System",
                tmp_path,
                api_url=instance.api_url,
                token=worker.key,
                cache_directory=tmp_path / "cache",
            )
            task = Probe({}, {"environment_id": environment.id})
            task.input_id = input_artifact.id
            task.report = report
            assert await asyncio.to_thread(task.execute, context) is True
            status, _ = await worker.call(
                "PUT", f"work-request/{work_request_id}/completed/", {"result": "success"}
            )
            assert status == 200
            return context

    context = asyncio.run(scenario())

    assert report["fetched"] == ("debusine:test", ["input.txt"])
    assert (context.input_directory / "input" / "input.txt").read_text() == "input\n"
    # The environment came through the cache, checked against the artifact's SHA-256.
    cached = report["environment"]
    assert cached.artifact_id == environment.id
    assert cached.tarball == tmp_path / "cache" / "environments" / str(environment.id) / (
        TARBALL.name
    )
    assert cached.data["codename"] == "bookworm"
    assert hashlib.sha256(cached.tarball.read_bytes()).hexdigest() == (
        tarball_files[TARBALL.name].sha256
    )
    assert report["debian_version"].startswith("12.")
    # cleanup() stopped the executor: nothing left of the extracted system.
    assert list((context.directory / "executor").iterdir()) == []
    # run_logged: the command, its output and its status, in the debug log.
    assert report["status"] == 4
    log = (context.debug_log_directory / "probe.log").read_text()
    assert "$ sh -c 'echo to-stdout; echo to-stderr >&2; exit 4'\nto-stdout\nto-stderr\n" in log
    assert "exit status 4" in log

    uploaded = user_client.artifact_get(report["uploaded"])
    assert uploaded.category == "debusine:test"
    assert uploaded.workspace == "System"
    assert uploaded.files_to_upload == []
    assert uploaded.files["result.txt"].content_type == "text/plain; charset=utf-8"
    relations = user_client.relation_list(uploaded.id)
    assert [(r.target, r.type) for r in relations] == [(input_artifact.id, "relates-to")]
