# ruff: noqa: F811 (the fixtures imported from test_debian_pipeline are parameters here)
"""
The `debian_pipeline` workflow end to end, with the real Debian tools: a server whose Celery
worker runs the workflow orchestrators, and a worker running as an unprivileged user (the
build environment and source packages of `test_debian_pipeline`, whose fixtures this module
reuses).

One command starts the pipeline on a source package: it is built for amd64 (with its `all`
packages), then checked with lintian, autopkgtest and piuparts, and the workflow ends
`success` with every step's artifacts reachable from it. A source that fails to build ends
the workflow `failure` with no check run, and retrying it re-runs only the failed build.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from debusine.client.client import DebusineClient
from debusine.testing.throwaway import ThrowawayInstance
from tests.integration import debian_pipeline
from tests.integration.conftest import scheduling_instance
from tests.integration.debian_pipeline import ARCHITECTURE, CODENAME, TASK_TIMEOUT
from tests.integration.rest_user import RestUser
from tests.integration.test_debian_pipeline import (  # noqa: F401 (fixtures)
    client,
    environment,
    rest,
    sources,
    user_token,
    worker,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A pipeline builds, then runs three checks, one after the other on one worker.
PIPELINE_TIMEOUT = 4 * TASK_TIMEOUT

# Bootstrapping the environment (when no run has kept one) on a loaded machine takes longer
# than the pipeline module allows for it; what it keeps serves both modules afterwards.
debian_pipeline.BOOTSTRAP_TIMEOUT = max(debian_pipeline.BOOTSTRAP_TIMEOUT, 1800)


@pytest.fixture(scope="module")
def instance(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[ThrowawayInstance]:
    with scheduling_instance(
        tmp_path_factory, f"debian_workflow_{worker_id}", workflows=True
    ) as running:
        yield running


@pytest.fixture(scope="module")
def template(instance: ThrowawayInstance, rest: RestUser) -> str:
    instance.admin("workspace", "grant_role", "System", "owner", "debian-tester-contributors")
    rest.call(
        "POST",
        "/1.0/workflow-template/",
        json={
            "name": "pipeline",
            "task_name": "debian_pipeline",
            "task_data": {
                "architectures": [ARCHITECTURE, "all"],
                "target_distribution": f"debian:{CODENAME}",
            },
            "priority": 0,
        },
    )
    return "pipeline"


def tree(rest: RestUser, workflow_id: int) -> list[dict[str, Any]]:
    """Every work request of the workflow's tree (retried ones included), depth first."""
    found = []
    page = rest.call("GET", f"/1.0/work-request/?parent={workflow_id}")
    assert page["next"] is None
    for child in reversed(page["results"]):
        found.append(child)
        if child["task_type"] == "Workflow":
            found.extend(tree(rest, child["id"]))
    return found


def start(rest: RestUser, template: str, source: int) -> int:
    created = rest.call(
        "POST",
        "/1.0/workflow/",
        json={"template_name": template, "task_data": {"input": {"source_artifact": source}}},
    )
    workflow_id: int = created["id"]
    return workflow_id


def test_the_pipeline_builds_and_checks_a_package(
    rest: RestUser,
    client: DebusineClient,
    template: str,
    environment: int,
    sources: dict[str, int],
) -> None:
    workflow_id = start(rest, template, sources["good"])

    done = rest.wait_until(workflow_id, "completed", "aborted", timeout=PIPELINE_TIMEOUT)

    steps = {item["task_name"]: item for item in tree(rest, workflow_id)}
    assert done["result"] == "success", (done, steps)
    for name in ("sbuild", "lintian", "autopkgtest", "piuparts"):
        assert (steps[name]["status"], steps[name]["result"]) == ("completed", "success")
        assert steps[name]["artifacts"], steps[name]
    categories = {
        client.artifact_get(artifact_id).category
        for item in steps.values()
        for artifact_id in item["artifacts"]
    }
    assert {"debian:upload", "debian:lintian", "debian:autopkgtest"} <= categories


def test_a_failed_build_fails_the_pipeline_and_its_retry_rebuilds_only_it(
    rest: RestUser, template: str, environment: int, sources: dict[str, int]
) -> None:
    workflow_id = start(rest, template, sources["bad"])

    done = rest.wait_until(workflow_id, "completed", timeout=PIPELINE_TIMEOUT)

    assert done["result"] == "failure"
    first = tree(rest, workflow_id)
    assert [item["task_name"] for item in first if item["task_type"] == "Worker"] == ["sbuild"]
    qa = next(item for item in first if item["task_name"] == "qa")
    assert qa["status"] == "aborted"

    rest.call("POST", f"/1.0/work-request/{workflow_id}/retry/", json={})
    again = rest.wait_until(workflow_id, "completed", timeout=PIPELINE_TIMEOUT)

    assert again["result"] == "failure"
    builds = [
        item
        for item in tree(rest, workflow_id)
        if (item["task_type"], item["task_name"]) == ("Worker", "sbuild")
    ]
    assert len(builds) == 2 and {b["result"] for b in builds} == {"failure"}
    assert not [item for item in tree(rest, workflow_id) if item["task_name"] == "lintian"]
