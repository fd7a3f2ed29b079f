"""
Workflows end to end on real processes: a throwaway server with the scheduler, beat and a
Celery worker consuming the `workflows` queue, and a real `debusine-worker`. A user creates a
`noop` workflow template and starts a workflow over the REST API; the orchestrator populates
it in Celery, the worker runs its noop children, the synchronization point and the callback
run on the server, and the workflow ends `success`. A workflow whose children fail ends
`failure`, and retrying it re-runs only the failed children.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debusine.testing.throwaway import ThrowawayError, ThrowawayInstance, throwaway_instance
from debusine.testing.worker import LOG_CONNECTED, WorkerProcess, start_worker
from tests.integration.client_cli import Cli, configured_cli
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def instance(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[ThrowawayInstance]:
    from django.conf import settings

    try:
        with throwaway_instance(
            postgres_url=settings.DEBUSINE_DATABASE_URL,
            redis_url=settings.DEBUSINE_REDIS_URL,
            data_dir=tmp_path_factory.mktemp("workflows"),
            name_prefix=f"test_wf_{worker_id}",
            scheduling=True,
            workflows=True,
            settings={"DEBUSINE_SCHEDULER_FALLBACK_INTERVAL": "2"},
        ) as running:
            yield running
    except ThrowawayError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def worker(
    instance: ThrowawayInstance, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    daemon = start_worker(
        instance.api_url,
        tmp_path_factory.mktemp("worker"),
        activation_token=instance.create_worker_activation("wf-worker.example"),
    )
    try:
        daemon.wait_for_log(LOG_CONNECTED)
        yield daemon
    finally:
        assert daemon.stop() == 0, "the worker did not stop cleanly"


@pytest.fixture(scope="module")
def owner_token(instance: ThrowawayInstance) -> str:
    token = instance.create_contributor("wf-owner")
    instance.admin("workspace", "grant_role", "System", "owner", "wf-owner-contributors")
    return token


@pytest.fixture(scope="module")
def owner(instance: ThrowawayInstance, owner_token: str) -> RestUser:
    return RestUser(instance, owner_token)


@pytest.fixture
def cli(instance: ThrowawayInstance, owner_token: str, tmp_path: Path) -> Cli:
    return configured_cli(tmp_path / "home", instance.api_url, owner_token)


def steps(user: RestUser, workflow_id: int) -> dict[str, dict[str, Any]]:
    """The workflow's current steps by name (a retried step's newest work request)."""
    page = user.call("GET", f"/1.0/work-request/?parent={workflow_id}")
    assert page["next"] is None
    # Newest first: the oldest is read first, so that the newest of a step wins.
    return {child["workflow_data"]["step"]: child for child in reversed(page["results"])}


def test_a_noop_workflow_runs_to_success(
    owner: RestUser, worker: WorkerProcess, instance: ThrowawayInstance
) -> None:
    template = owner.call(
        "POST",
        "/1.0/workflow-template/",
        json={
            "name": "noops",
            "task_name": "noop",
            "task_data": {"children": 3, "synchronization_point": True, "callback": True},
            "priority": 0,
        },
    )
    assert template["task_name"] == "noop"

    created = owner.call("POST", "/1.0/workflow/", json={"template_name": "noops"})
    assert (created["task_type"], created["status"]) == ("Workflow", "pending")

    done = owner.wait_until(created["id"], "completed", "aborted", timeout=120)
    assert done["result"] == "success", (done, (instance.data_dir / "celery.log").read_text())
    children = steps(owner, created["id"])
    assert sorted(children) == [
        "after-callback",
        "all-done",
        "callback",
        "noop-0",
        "noop-1",
        "noop-2",
    ]
    assert {(c["status"], c["result"]) for c in children.values()} == {("completed", "success")}
    assert children["all-done"]["task_type"] == "Internal"
    assert children["noop-0"]["worker"] is not None  # run by the real worker

    roots = owner.call("GET", "/1.0/work-request/?task_type=Workflow&root_only=true")
    assert [item["id"] for item in roots["results"]] == [created["id"]]


def test_a_failing_workflow_fails_and_its_retry_reruns_only_the_failures(
    owner: RestUser, worker: WorkerProcess
) -> None:
    owner.call(
        "POST",
        "/1.0/workflow-template/",
        json={"name": "failing", "task_name": "noop", "task_data": {}, "priority": 0},
    )
    created = owner.call(
        "POST",
        "/1.0/workflow/",
        json={"template_name": "failing", "task_data": {"children": 2, "result": False}},
    )

    done = owner.wait_until(created["id"], "completed", timeout=120)
    assert done["result"] == "failure"
    failed = steps(owner, created["id"])
    assert {c["result"] for c in failed.values()} == {"failure"}

    retried = owner.call("POST", f"/1.0/work-request/{created['id']}/retry/", json={})
    assert retried["id"] == created["id"]  # a workflow is retried in place
    again = owner.wait_until(created["id"], "completed", timeout=120)
    assert again["result"] == "failure"  # the same noop children fail again
    rerun = steps(owner, created["id"])
    assert {step: child["id"] for step, child in rerun.items()} != {
        step: child["id"] for step, child in failed.items()
    }
    page = owner.call("GET", f"/1.0/work-request/?parent={created['id']}")
    assert len(page["results"]) == 4  # two failed, two retries: nothing else re-created


def test_the_client_starts_shows_aborts_and_retries_workflows(
    cli: Cli, owner: RestUser, worker: WorkerProcess
) -> None:
    created = cli.ok(
        "create-workflow-template", "cli-noops", "noop", "--data", "-", stdin="children: 1\n"
    ).yaml()
    assert created["result"] == "success"
    # A workflow whose callback waits for a step that waits for a delay would be long:
    # a synchronization point after a child is enough to see a tree.
    started = cli.ok(
        "create-workflow", "cli-noops", "--data", "-", stdin="synchronization_point: true\n"
    ).yaml()
    workflow_id = started["workflow_id"]
    owner.wait_until(workflow_id, "completed", timeout=120)

    tree = cli.ok("show-workflow", str(workflow_id)).yaml()
    assert (tree["id"], tree["status"], tree["result"]) == (workflow_id, "completed", "success")
    assert [(c["step"], c["task_type"], c["result"]) for c in tree["children"]] == [
        ("noop-0", "Worker", "success"),
        ("all-done", "Internal", "success"),
    ]
    listed = cli.ok("list-workflows").yaml()
    assert workflow_id in [item["id"] for item in listed]
    assert {item["task_type"] for item in listed} == {"Workflow"}

    # A workflow whose child waits an hour (a Wait `delay` step) runs until aborted; its
    # retry runs the aborted steps again.
    cli.ok(
        "create-workflow-template",
        "cli-wait",
        "noop",
        "--data",
        "-",
        stdin="children: 1\ndelay_seconds: 3600\n",
    )
    stuck = cli.ok("create-workflow", "cli-wait", "--data", "-", stdin="{}\n").yaml()
    stuck_id = stuck["workflow_id"]
    owner.wait_until(stuck_id, "running", timeout=60)
    aborted = cli.ok("abort-workflow", str(stuck_id)).yaml()
    assert aborted["status"] == "aborted"
    steps_before = cli.ok("show-workflow", str(stuck_id)).yaml()["children"]
    assert [(c["step"], c["status"]) for c in steps_before] == [
        ("delay", "aborted"),
        ("noop-0", "aborted"),
    ]
    retried = cli.ok("retry-workflow", str(stuck_id)).yaml()
    assert retried["status"] == "running"
    steps_after = cli.ok("show-workflow", str(stuck_id)).yaml()["children"]
    assert [(c["step"], c["status"]) for c in steps_after] == [
        ("delay", "pending"),
        ("noop-0", "blocked"),
    ]
    assert {c["id"] for c in steps_after}.isdisjoint(c["id"] for c in steps_before)
    cli.ok("abort-workflow", str(stuck_id))
