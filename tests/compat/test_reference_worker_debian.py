"""
Debian's real `debusine-worker` 0.11.3 runs our server's Debian work requests.

The daemon runs as the unprivileged `debusine-worker` user (sbuild in unshare mode refuses
root), from the unpacked Debian packages, against our server with its real scheduler; it is the
only worker of that server, so every work request below runs on it. The bookworm environment
and the source packages are those of the pipeline test (tests/integration/debian_pipeline.py).
The task data are what a 0.11.3 worker accepts (protocol-versions.md §1.8: no
`host_architecture` for lintian, `fail_on_severity` explicit), and the dynamic data our
scheduler computes must pass its strict models too.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from debusine.client.client import DebusineClient
from debusine.testing.reference_client import SYSTEM_PYTHON, ReferenceWorker
from debusine.testing.reference_worker import LOG_CONNECTED, start_reference_worker
from debusine.testing.throwaway import ThrowawayInstance
from debusine.testing.worker import WorkerProcess, ensure_worker_user
from tests.integration.conftest import scheduling_instance
from tests.integration.debian_pipeline import (
    ARCHITECTURE,
    CODENAME,
    ENVIRONMENT,
    GOOD_BINARIES,
    GOOD_SOURCE,
    TASK_TIMEOUT,
    WORKER_USER,
    artifacts_by_category,
    make_sources,
    provide_environment,
)
from tests.integration.rest_user import RestUser

pytestmark = [pytest.mark.compat, pytest.mark.slow]

WORKER_NAME = "reference-debian-example-org"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[ThrowawayInstance]:
    """Our server with its scheduler and beat, for this module's worker only."""
    with scheduling_instance(tmp_path_factory, f"reference_debian_{worker_id}") as running:
        yield running


def check_runnable_by(worker: ReferenceWorker, user: str) -> None:
    """Fail unless `user` can import the unpacked worker and its Debian tasks."""
    result = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import debusine.worker.__main__, debusine.tasks.sbuild"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(worker.python_path)},
        # Not the checkout: there `import debusine` would find ours.
        cwd="/",
        user=user,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        f"{user} cannot run the reference worker in {worker.root} (is it readable by "
        f"every user?):\n{result.stderr}"
    )


def worker_row(server: ThrowawayInstance, name: str) -> dict[str, Any]:
    rows = yaml.safe_load(server.admin("worker", "list", "--yaml")) or []
    [row] = [row for row in rows if row["name"] == name]
    return dict(row)


def external_workers(server: ThrowawayInstance) -> list[str]:
    rows = yaml.safe_load(server.admin("worker", "list", "--yaml")) or []
    return [row["name"] for row in rows if row["worker_type"] == "external"]


@pytest.fixture(scope="module")
def worker(
    server: ThrowawayInstance,
    installed_reference_worker: ReferenceWorker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """The reference worker, enabled, running as `debusine-worker`, its metadata stored."""
    ensure_worker_user(WORKER_USER)
    check_runnable_by(installed_reference_worker, WORKER_USER)
    process = start_reference_worker(
        installed_reference_worker,
        server.api_url,
        tmp_path_factory.mktemp("reference-debian-worker"),
        activation_token=server.create_worker_activation(WORKER_NAME.replace("-", ".")),
        user=WORKER_USER,
    )
    try:
        process.wait_for_log(LOG_CONNECTED, timeout=60)
        deadline = time.monotonic() + 30
        while not worker_row(server, WORKER_NAME)["dynamic_metadata"]:
            assert time.monotonic() < deadline, process.log_text()[-3000:]
            time.sleep(0.2)
        yield process
    finally:
        still_running = process.process.poll() is None
        process.stop()
        assert still_running, f"the reference worker had exited:\n{process.log_text()[-3000:]}"


@pytest.fixture(scope="module")
def user_token(server: ThrowawayInstance) -> str:
    return server.create_contributor("reference-debian-tester")


@pytest.fixture(scope="module")
def rest(server: ThrowawayInstance, user_token: str) -> RestUser:
    return RestUser(server, user_token)


@pytest.fixture(scope="module")
def client(server: ThrowawayInstance, user_token: str) -> DebusineClient:
    return DebusineClient(server.api_url, user_token)


@pytest.fixture(scope="module")
def environment(
    server: ThrowawayInstance, worker: WorkerProcess, rest: RestUser, client: DebusineClient
) -> int:
    """The bookworm system tarball, filed in debian@debian:environments."""
    return provide_environment(server, rest, client)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, client: DebusineClient) -> dict[str, int]:
    return make_sources(tmp_path_factory.mktemp("reference-sources"), client)


def describe(work_request: dict[str, Any], worker: WorkerProcess, client: DebusineClient) -> str:
    """A work request, its debug logs and the end of the daemon's log, for failure messages."""
    text = f"{work_request}\n"
    debug_logs = artifacts_by_category(client, work_request).get(
        "debusine:work-request-debug-logs", []
    )
    for artifact in debug_logs:
        for name, file in artifact.files.items():
            contents = client.session.get(file.url, headers=client.headers()).text
            text += f"--- {name}\n{contents[-3000:]}\n"
    return f"{text}--- reference worker log\n{worker.log_text()[-3000:]}"


@pytest.fixture(scope="module")
def build(
    rest: RestUser, worker: WorkerProcess, environment: int, sources: dict[str, int]
) -> dict[str, Any]:
    """The sbuild work request of the good package, completed by the reference worker."""
    work_request_id = rest.create(
        "sbuild",
        {
            "input": {"source_artifact": sources["good"]},
            "host_architecture": ARCHITECTURE,
            "environment": ENVIRONMENT,
            "build_components": ["any", "all"],
        },
    )
    return rest.wait_until(work_request_id, "completed", timeout=TASK_TIMEOUT)  # type: ignore[no-any-return]


def test_worker_advertises_sbuild_and_unshare(
    server: ThrowawayInstance, worker: WorkerProcess
) -> None:
    metadata = worker_row(server, WORKER_NAME)["dynamic_metadata"]
    assert metadata["sbuild:available"] is True
    assert metadata["sbuild:version"] == 1
    assert metadata["lintian:version"] == 1
    assert metadata["executor:unshare:available"] is True
    assert worker.uid() != 0


def test_sbuild_builds_the_package(
    server: ThrowawayInstance,
    build: dict[str, Any],
    worker: WorkerProcess,
    client: DebusineClient,
    environment: int,
) -> None:
    assert build["result"] == "success", describe(build, worker, client)
    # The reference worker is this server's only external worker: it ran the build.
    assert build["worker"] is not None
    assert external_workers(server) == [WORKER_NAME]
    assert build["dynamic_task_data"]["environment_id"] == environment
    produced = artifacts_by_category(client, build)
    (log,) = produced["debian:package-build-log"]
    assert log.data["source"] == GOOD_SOURCE
    (build_log,) = [name for name in log.files if name.endswith(".build")]
    text = client.session.get(log.files[build_log].url, headers=client.headers()).text
    assert "Status: successful" in text
    # sbuild ran in the environment the server resolved, in a user namespace.
    assert f"Distribution: {CODENAME}" in text
    binaries = produced["debian:binary-package"]
    assert sorted(b.data["deb_fields"]["Package"] for b in binaries) == GOOD_BINARIES
    (upload,) = produced["debian:upload"]
    assert any(name.endswith(".changes") for name in upload.files)
    assert "debian:binary-packages" in produced


def test_lintian_analyses_the_build_in_our_environment(
    rest: RestUser,
    build: dict[str, Any],
    worker: WorkerProcess,
    client: DebusineClient,
    sources: dict[str, int],
    environment: int,
) -> None:
    # 0.11.3's unshare executor unpacks environments with `tar --xz` only (and ignores tar's
    # failure): what our mmdebstrap task makes must be xz for this to pass.
    assert build["result"] == "success", describe(build, worker, client)
    binaries = [a.id for a in artifacts_by_category(client, build)["debian:binary-package"]]
    work_request_id = rest.create(
        "lintian",
        {
            "input": {"source_artifact": sources["good"], "binary_artifacts": binaries},
            "environment": ENVIRONMENT,
            # 0.11.3 defaults to "none", later versions to "error": say it.
            "fail_on_severity": "error",
        },
    )
    done = rest.wait_until(work_request_id, "completed", timeout=TASK_TIMEOUT)
    assert done["result"] == "success", describe(done, worker, client)
    assert done["dynamic_task_data"]["environment_id"] == environment
    analyses = artifacts_by_category(client, done)["debian:lintian"]
    assert analyses, describe(done, worker, client)
    for analysis in analyses:
        assert "tags_count_by_severity" in analysis.data["summary"]
        assert "lintian.txt" in analysis.files and "analysis.json" in analysis.files


def test_a_package_that_fails_to_build_is_a_failure_with_its_log(
    rest: RestUser,
    worker: WorkerProcess,
    client: DebusineClient,
    environment: int,
    sources: dict[str, int],
) -> None:
    work_request_id = rest.create(
        "sbuild",
        {
            "input": {"source_artifact": sources["bad"]},
            "host_architecture": ARCHITECTURE,
            "environment": ENVIRONMENT,
        },
    )
    done = rest.wait_until(work_request_id, "completed", timeout=TASK_TIMEOUT)
    assert done["result"] == "failure", describe(done, worker, client)
    produced = artifacts_by_category(client, done)
    assert "debian:binary-package" not in produced
    (log,) = produced["debian:package-build-log"]
    (name,) = [name for name in log.files if name.endswith(".build")]
    text = client.session.get(log.files[name].url, headers=client.headers()).text
    assert "this build fails on purpose" in text
