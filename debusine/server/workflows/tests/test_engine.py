"""
The workflow engine without Debian tools: populate idempotence, roll-up of status and result,
callbacks, synchronization points, promises, delays, sub-workflows, abort and retry of trees.

Worker children (`noop`) are completed the way a worker's report completes them
(`transitions.complete`); what the Celery jobs would do after each commit is done by
`orchestration.run_until_idle()`, the periodic sweep run until nothing changes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from debusine.protocol.work_requests import TaskType, WorkRequestResult, WorkRequestStatus
from debusine.server.db.models import CollectionItem, User, WorkRequest
from debusine.server.lookups import ServerLookupResolver
from debusine.server.work_requests import transitions
from debusine.server.workflows import orchestration
from debusine.server.workflows.base import BaseWorkflowData, Workflow
from debusine.testing.playground import Playground

PENDING, BLOCKED, RUNNING = (
    WorkRequestStatus.PENDING,
    WorkRequestStatus.BLOCKED,
    WorkRequestStatus.RUNNING,
)
COMPLETED, ABORTED = WorkRequestStatus.COMPLETED, WorkRequestStatus.ABORTED
SUCCESS, FAILURE = WorkRequestResult.SUCCESS, WorkRequestResult.FAILURE


class PromiseWorkflowData(BaseWorkflowData):
    prefix: str = ""


class PromiseWorkflow(Workflow[PromiseWorkflowData], name="test-promises"):
    """`build` promises `build-amd64`; `consume` needs it."""

    def populate(self) -> None:
        build = self.ensure_child("noop", {}, step="build")
        self.provides_artifact(build, "debusine:test", "build-amd64", {"architecture": "amd64"})
        consume = self.ensure_child("noop", {}, step="consume")
        self.requires_artifact(consume, f"internal@collections/name:{self.prefix}build-amd64")


class ChainWorkflowData(BaseWorkflowData):
    pass


class ChainWorkflow(Workflow[ChainWorkflowData], name="test-chain"):
    """`first`, then `second` (depends on it), and `alone`; plus a noop sub-workflow."""

    def populate(self) -> None:
        first = self.ensure_child("noop", {}, step="first")
        self.ensure_child("noop", {}, step="second", dependencies=[first])
        self.ensure_child("noop", {}, step="alone")
        self.ensure_sub_workflow("noop", {"children": 1}, step="sub", dependencies=[first])


def start(user: User, playground: Playground, task_name: str, **data: Any) -> WorkRequest:
    workflow_class = Workflow.class_from_name(task_name)
    workflow = transitions.create_workflow(
        workspace=playground.workspace,
        created_by=user,
        task_name=task_name,
        task_data=workflow_class.validate_data(data),
    )
    orchestration.run_until_idle()
    workflow.refresh_from_db()
    return workflow


def children(workflow: WorkRequest) -> dict[str, WorkRequest]:
    """Current children (retried ones replaced) by step."""
    return {
        child.workflow_data_json["step"]: child
        for child in WorkRequest.objects.filter(
            parent=workflow, superseded_by__isnull=True
        ).order_by("id")
    }


def finish(work_request: WorkRequest, result: str = SUCCESS) -> None:
    """Complete a worker child as its worker's report would, then let the engine react."""
    work_request.refresh_from_db()
    assert transitions.complete(work_request, result)
    orchestration.run_until_idle()


def reload(work_request: WorkRequest) -> WorkRequest:
    work_request.refresh_from_db()
    return work_request


@pytest.fixture
def owner(playground: Playground) -> User:
    user = playground.create_user("owner")
    playground.grant(user, playground.workspace)
    return user


def test_an_empty_workflow_succeeds_once_populated(playground: Playground, owner: User) -> None:
    workflow = start(owner, playground, "noop")

    assert (workflow.status, workflow.result) == (COMPLETED, SUCCESS)
    assert workflow.task_type == TaskType.WORKFLOW
    assert workflow.internal_collection is not None
    assert workflow.internal_collection.category == "debusine:workflow-internal"


def test_populate_is_idempotent(playground: Playground, owner: User) -> None:
    workflow = start(owner, playground, "noop", children=3)
    assert workflow.status == RUNNING
    before = sorted(workflow.children.values_list("id", flat=True))
    assert len(before) == 3

    assert orchestration.process(workflow.pk) == "populated"
    orchestration.orchestrator(workflow).populate()

    assert sorted(workflow.children.values_list("id", flat=True)) == before


def test_children_carry_workflow_data_and_the_workflow_priority(
    playground: Playground, owner: User
) -> None:
    workflow = transitions.create_workflow(
        workspace=playground.workspace,
        created_by=owner,
        task_name="noop",
        task_data={"children": 1},
        priority_base=7,
    )
    orchestration.run_until_idle()

    child = children(workflow)["noop-0"]
    assert child.workflow_data_json == {
        "step": "noop-0",
        "display_name": "noop 0",
        "group": "noop",
    }
    assert (child.task_type, child.status, child.priority_base) == ("Worker", PENDING, 7)


def test_the_workflow_rolls_up_its_childrens_results(playground: Playground, owner: User) -> None:
    good = start(owner, playground, "noop", children=2)
    bad = start(owner, playground, "noop", children=2)

    for child in children(good).values():
        finish(child)
    first, second = children(bad).values()
    finish(first, FAILURE)
    assert reload(bad).status == RUNNING  # one child still runs
    finish(second)

    assert (reload(good).status, good.result) == (COMPLETED, SUCCESS)
    assert (reload(bad).status, bad.result) == (COMPLETED, FAILURE)


def test_a_child_allowed_to_fail_does_not_fail_the_workflow(
    playground: Playground, owner: User
) -> None:
    workflow = start(owner, playground, "noop", children=1)
    child = children(workflow)["noop-0"]
    child.workflow_data_json = {**child.workflow_data_json, "allow_failure": True}
    child.save()

    finish(child, FAILURE)

    assert (reload(workflow).status, workflow.result) == (COMPLETED, SUCCESS)


def test_a_synchronization_point_waits_for_every_child(
    playground: Playground, owner: User
) -> None:
    workflow = start(owner, playground, "noop", children=2, synchronization_point=True)
    steps = children(workflow)
    barrier = steps["all-done"]
    assert (barrier.task_type, barrier.task_name, barrier.status) == (
        "Internal",
        "synchronization_point",
        BLOCKED,
    )

    finish(steps["noop-0"])
    assert reload(barrier).status == BLOCKED
    finish(steps["noop-1"])

    assert (reload(barrier).status, barrier.result) == (COMPLETED, SUCCESS)
    assert (reload(workflow).status, workflow.result) == (COMPLETED, SUCCESS)


def test_a_callback_runs_the_orchestrator_once_its_dependencies_are_done(
    playground: Playground, owner: User
) -> None:
    workflow = start(owner, playground, "noop", children=1, callback=True)
    assert "after-callback" not in children(workflow)

    finish(children(workflow)["noop-0"])

    steps = children(workflow)
    assert (steps["callback"].status, steps["callback"].result) == (COMPLETED, SUCCESS)
    assert steps["after-callback"].status == PENDING
    assert reload(workflow).status == RUNNING  # the callback's new child runs
    finish(steps["after-callback"])
    assert (reload(workflow).status, workflow.result) == (COMPLETED, SUCCESS)


@pytest.mark.parametrize("prefix", ["", "sub|"])
def test_a_promise_makes_its_consumer_wait_then_becomes_the_artifact(
    playground: Playground, owner: User, prefix: str
) -> None:
    workflow = start(owner, playground, "test-promises", prefix=prefix)
    build, consume = children(workflow)["build"], children(workflow)["consume"]
    assert workflow.internal_collection is not None
    promise = CollectionItem.objects.get(
        parent_collection=workflow.internal_collection, removed_at__isnull=True
    )
    assert (promise.name, promise.category, promise.child_type) == (
        f"{prefix}build-amd64",
        "debusine:promise",
        "b",
    )
    assert promise.data["promise_work_request_id"] == build.pk
    assert consume.status == BLOCKED
    assert list(consume.dependencies.all()) == [build]

    artifact = playground.create_artifact(created_by_work_request=build)
    finish(build)

    item = CollectionItem.objects.get(
        parent_collection=workflow.internal_collection, removed_at__isnull=True
    )
    assert (item.name, item.artifact_id, item.data) == (
        f"{prefix}build-amd64",
        artifact.pk,
        {"architecture": "amd64"},
    )
    assert reload(consume).status == PENDING
    found = ServerLookupResolver(consume).lookup_single(
        f"internal@collections/name:{prefix}build-amd64", expect_type="artifact"
    )
    assert found.artifact == artifact.pk


def test_internal_collection_lookups_need_a_workflow(playground: Playground, owner: User) -> None:
    lone = playground.create_work_request(created_by=owner)

    with pytest.raises(Exception, match="only valid inside a workflow"):
        ServerLookupResolver(lone).lookup_single(
            "internal@collections/name:x", expect_type="artifact"
        )


def test_sub_workflows_roll_up_through_the_tree(playground: Playground, owner: User) -> None:
    workflow = start(owner, playground, "test-chain")
    steps = children(workflow)
    sub = steps["sub"]
    assert (sub.task_type, sub.status) == ("Workflow", BLOCKED)
    assert sub.internal_collection is None  # the root's is shared

    finish(steps["first"])
    assert reload(sub).status == RUNNING
    for step in ("second", "alone"):
        finish(steps[step])
    assert reload(workflow).status == RUNNING
    finish(children(sub)["noop-0"])

    assert (reload(sub).status, sub.result) == (COMPLETED, SUCCESS)
    assert (reload(workflow).status, workflow.result) == (COMPLETED, SUCCESS)


def test_a_failed_dependency_aborts_its_dependants_and_fails_the_workflow(
    playground: Playground, owner: User
) -> None:
    workflow = start(owner, playground, "test-chain")
    steps = children(workflow)

    finish(steps["first"], FAILURE)
    finish(steps["alone"])

    assert reload(steps["second"]).status == ABORTED
    assert reload(steps["sub"]).status == ABORTED
    assert (reload(workflow).status, workflow.result) == (COMPLETED, FAILURE)


def test_aborting_a_workflow_aborts_its_whole_tree(playground: Playground, owner: User) -> None:
    workflow = start(owner, playground, "test-chain")
    finish(children(workflow)["first"])
    sub = reload(children(workflow)["sub"])
    assert sub.status == RUNNING

    transitions.abort(reload(workflow), by=owner)
    orchestration.run_until_idle()

    assert reload(workflow).status == ABORTED
    tree = [*children(workflow).values(), *children(sub).values()]
    assert {child.status for child in tree if child.pk != children(workflow)["first"].pk} == {
        ABORTED
    }
    assert reload(children(workflow)["first"]).result == SUCCESS


def test_retrying_a_workflow_reruns_only_failed_children_and_their_dependants(
    playground: Playground, owner: User
) -> None:
    workflow = start(owner, playground, "test-chain")
    old = children(workflow)
    finish(old["first"], FAILURE)
    finish(old["alone"])
    assert reload(workflow).result == FAILURE

    transitions.retry_workflow(reload(workflow))
    orchestration.run_until_idle()

    new = children(workflow)
    assert reload(workflow).status == RUNNING
    assert new["alone"].pk == old["alone"].pk  # succeeded: kept
    assert new["sub"].pk == old["sub"].pk  # a workflow is retried in place
    assert new["second"].supersedes_id == old["second"].pk
    assert new["first"].supersedes_id == old["first"].pk
    assert new["first"].status == PENDING
    assert (new["second"].status, list(new["second"].dependencies.all())) == (
        BLOCKED,
        [new["first"]],
    )
    # The sub-workflow never started: retried in place, waiting again for `first`.
    assert (new["sub"].status, list(new["sub"].dependencies.all())) == (
        BLOCKED,
        [new["first"]],
    )
    assert WorkRequest.objects.filter(parent=workflow).count() == 6  # populate added nothing

    finish(new["first"])
    finish(reload(new["second"]))
    finish(children(reload(new["sub"]))["noop-0"])

    assert (reload(workflow).status, workflow.result) == (COMPLETED, SUCCESS)


def test_retrying_an_aborted_workflow_retries_its_aborted_children(
    playground: Playground, owner: User
) -> None:
    workflow = start(owner, playground, "noop", children=2)
    transitions.abort(reload(workflow), by=owner)

    transitions.retry_workflow(reload(workflow))
    orchestration.run_until_idle()

    assert [child.status for child in children(workflow).values()] == [PENDING, PENDING]
    for child in children(workflow).values():
        finish(child)
    assert (reload(workflow).status, workflow.result) == (COMPLETED, SUCCESS)


def test_a_promise_follows_its_retried_provider(playground: Playground, owner: User) -> None:
    workflow = start(owner, playground, "test-promises")
    finish(children(workflow)["build"], FAILURE)
    assert reload(children(workflow)["consume"]).status == ABORTED

    transitions.retry_workflow(reload(workflow))
    orchestration.run_until_idle()

    build = children(workflow)["build"]
    promise = CollectionItem.objects.get(
        parent_collection=workflow.internal_collection, removed_at__isnull=True
    )
    assert promise.data["promise_work_request_id"] == build.pk
    assert list(children(workflow)["consume"].dependencies.all()) == [build]


def test_a_delay_completes_once_its_time_has_come(playground: Playground, owner: User) -> None:
    def delay(until: Any) -> WorkRequest:
        return transitions.create(
            workspace=playground.workspace,
            created_by=owner,
            task_type=TaskType.WAIT,
            task_name="delay",
            task_data={"delay_until": until.isoformat()},
        )

    past, future = (
        delay(timezone.now() - timedelta(seconds=1)),
        delay(timezone.now() + timedelta(hours=1)),
    )

    assert orchestration.process(past.pk) == "done"
    assert orchestration.process(future.pk) == "waiting"
    assert (reload(past).status, past.result) == (COMPLETED, SUCCESS)
    assert reload(future).status == PENDING


def test_an_orchestrator_that_fails_ends_its_workflow_as_an_error(
    playground: Playground, owner: User
) -> None:
    workflow = transitions.create_workflow(
        workspace=playground.workspace,
        created_by=owner,
        task_name="noop",
        task_data={"children": "many"},  # bypasses validation: the orchestrator refuses it
    )

    assert orchestration.process(workflow.pk) == "error"

    assert (reload(workflow).status, workflow.result) == (COMPLETED, WorkRequestResult.ERROR)
    assert workflow.output_data_json is not None
    assert workflow.output_data_json["errors"][0]["code"] == "invalid-workflow"
    assert not workflow.children.exists()
