"""
A build farm at work, end to end: server, scheduler and a worker running as an unprivileged user
(as sbuild in unshare mode requires), with the real Debian tools.

The module bootstraps a bookworm build environment with the `mmdebstrap` task through
`debusine-admin environment create`, which files it in `debian@debian:environments`, and keeps
its tarball under /var/cache/debusine-tests between runs (a week at most): later runs upload
the kept tarball and file it with `environment add` instead of bootstrapping again. Then a
small debhelper package written by the test is built with sbuild and checked with lintian,
autopkgtest and piuparts, each a work request the scheduler hands to the worker; a package
that fails to build ends as a failure with its build log uploaded; invalid task data is
refused at creation and a lookup that matches nothing ends the work request as an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from debusine.client.client import DebusineClient
from debusine.testing.throwaway import ThrowawayInstance
from debusine.testing.worker import (
    LOG_CONNECTED,
    WorkerProcess,
    ensure_worker_user,
    start_worker,
)
from tests.integration.debian_pipeline import (
    ARCHITECTURE,
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

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker(
    instance: ThrowawayInstance, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker running as the unprivileged `debusine-worker` user."""
    ensure_worker_user(WORKER_USER)
    process = start_worker(
        instance.api_url,
        tmp_path_factory.mktemp("debian-worker"),
        activation_token=instance.create_worker_activation("debian-worker"),
        user=WORKER_USER,
    )
    try:
        process.wait_for_log(LOG_CONNECTED, timeout=120)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def user_token(instance: ThrowawayInstance) -> str:
    return instance.create_contributor("debian-tester")


@pytest.fixture(scope="module")
def rest(instance: ThrowawayInstance, user_token: str) -> RestUser:
    return RestUser(instance, user_token)


@pytest.fixture(scope="module")
def client(instance: ThrowawayInstance, user_token: str) -> DebusineClient:
    return DebusineClient(instance.api_url, user_token)


@pytest.fixture(scope="module")
def environment(
    instance: ThrowawayInstance, worker: WorkerProcess, rest: RestUser, client: DebusineClient
) -> int:
    """The id of the bookworm system tarball filed in debian@debian:environments."""
    return provide_environment(instance, rest, client)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, client: DebusineClient) -> dict[str, int]:
    """Source package artifacts: one that builds and one whose build fails."""
    return make_sources(tmp_path_factory.mktemp("sources"), client)


@pytest.fixture(scope="module")
def build(
    rest: RestUser, client: DebusineClient, environment: int, sources: dict[str, int]
) -> dict[str, Any]:
    """The sbuild work request of the good package, completed."""
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


def test_sbuild_builds_the_package(
    build: dict[str, Any], client: DebusineClient, environment: int
) -> None:
    assert build["result"] == "success", build
    assert build["dynamic_task_data"]["environment_id"] == environment
    produced = artifacts_by_category(client, build)
    (log,) = produced["debian:package-build-log"]
    assert log.data["source"] == GOOD_SOURCE
    assert any(name.endswith(".build") for name in log.files)
    binaries = produced["debian:binary-package"]
    assert sorted(b.data["deb_fields"]["Package"] for b in binaries) == GOOD_BINARIES
    (upload_artifact,) = produced["debian:upload"]
    assert any(name.endswith(".changes") for name in upload_artifact.files)
    assert "debian:binary-packages" in produced


def binary_ids(client: DebusineClient, build: dict[str, Any]) -> list[int]:
    return [a.id for a in artifacts_by_category(client, build)["debian:binary-package"]]


def test_lintian_autopkgtest_and_piuparts_pass(
    rest: RestUser, client: DebusineClient, build: dict[str, Any], sources: dict[str, int]
) -> None:
    assert build["result"] == "success", build
    binaries = binary_ids(client, build)
    created = {
        "lintian": rest.create(
            "lintian",
            {
                "input": {"source_artifact": sources["good"], "binary_artifacts": binaries},
                "environment": ENVIRONMENT,
                "fail_on_severity": "error",
            },
        ),
        "autopkgtest": rest.create(
            "autopkgtest",
            {
                "input": {"source_artifact": sources["good"], "binary_artifacts": binaries},
                "host_architecture": ARCHITECTURE,
                "environment": ENVIRONMENT,
            },
        ),
        "piuparts": rest.create(
            "piuparts",
            {
                "input": {"binary_artifacts": binaries},
                "host_architecture": ARCHITECTURE,
                "environment": ENVIRONMENT,
                "base_tgz": ENVIRONMENT,
            },
        ),
    }
    done = {
        name: rest.wait_until(work_request_id, "completed", timeout=TASK_TIMEOUT)
        for name, work_request_id in created.items()
    }
    for name, work_request in done.items():
        assert work_request["result"] == "success", (name, work_request)

    lintian = artifacts_by_category(client, done["lintian"])["debian:lintian"]
    assert lintian, done["lintian"]
    for analysis in lintian:
        assert "tags_count_by_severity" in analysis.data["summary"]
        assert "lintian.txt" in analysis.files and "analysis.json" in analysis.files

    (autopkgtest,) = artifacts_by_category(client, done["autopkgtest"])["debian:autopkgtest"]
    assert autopkgtest.data["results"], autopkgtest.data
    assert {r["status"] for r in autopkgtest.data["results"].values()} == {"PASS"}

    assert done["piuparts"]["artifacts"], done["piuparts"]


def test_a_package_that_fails_to_build_is_a_failure_with_its_log(
    rest: RestUser, client: DebusineClient, environment: int, sources: dict[str, int]
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

    assert done["result"] == "failure", done
    produced = artifacts_by_category(client, done)
    (log,) = produced["debian:package-build-log"]
    (name,) = [name for name in log.files if name.endswith(".build")]
    assert "debian:binary-package" not in produced
    text = client.session.get(log.files[name].url, headers=client.headers()).text
    assert "this build fails on purpose" in text


def test_invalid_task_data_is_refused_at_creation(rest: RestUser) -> None:
    response = rest.session.post(
        f"{rest.api_url}/1.0/work-request/",
        json={"task_name": "sbuild", "task_data": {"input": {}}, "event_reactions": {}},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert "source_artifact" in problem["detail"], problem
    assert "host_architecture" in problem["detail"], problem


def test_an_environment_that_matches_nothing_ends_as_an_error(
    rest: RestUser, environment: int, sources: dict[str, int]
) -> None:
    work_request_id = rest.create(
        "sbuild",
        {
            "input": {"source_artifact": sources["good"]},
            "host_architecture": ARCHITECTURE,
            "environment": "debian/match:codename=no-such-codename",
        },
    )
    done = rest.wait_until(work_request_id, "completed", timeout=60)

    assert done["result"] == "error"
    (error,) = done["output_data"]["errors"]
    assert error["code"] == "configure-failed"
    assert "no-such-codename" in error["message"]
