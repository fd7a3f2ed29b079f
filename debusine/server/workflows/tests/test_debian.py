"""
The Debian workflows' orchestration, without Debian tools: which builds and checks they create,
with which task data (validated by the tasks' own models), and how they wire them together.
Builds are completed as their workers would, with the upload artifact a build creates.
"""

from __future__ import annotations

from typing import Any

import pytest

from debusine.protocol.work_requests import WorkRequestResult, WorkRequestStatus
from debusine.server.db.models import Artifact, User, WorkRequest
from debusine.server.lookups import ServerLookupResolver
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import InvalidWorkRequestError
from debusine.server.workflows import orchestration
from debusine.server.workflows.base import Workflow, WorkflowInputError
from debusine.server.workflows.debian import ArchitecturesData, effective_architectures
from debusine.testing.playground import Playground

PENDING, BLOCKED, ABORTED = (
    WorkRequestStatus.PENDING,
    WorkRequestStatus.BLOCKED,
    WorkRequestStatus.ABORTED,
)
SUCCESS, FAILURE = WorkRequestResult.SUCCESS, WorkRequestResult.FAILURE


@pytest.fixture
def owner(playground: Playground) -> User:
    user = playground.create_user("owner")
    playground.grant(user, playground.workspace)
    return user


def source(playground: Playground, architecture: str = "any all") -> Artifact:
    return playground.create_artifact(
        category="debian:source-package",
        data={
            "name": "hello",
            "version": "1.0-1",
            "type": "dpkg",
            "dsc_fields": {"Source": "hello", "Architecture": architecture},
        },
    )


def start(
    owner: User, playground: Playground, task_name: str, data: dict[str, Any]
) -> WorkRequest:
    workflow_class = Workflow.class_from_name(task_name)
    workflow = transitions.create_workflow(
        workspace=playground.workspace,
        created_by=owner,
        task_name=task_name,
        task_data=workflow_class.validate_data(data),
    )
    workflow_class(workflow).validate_input()
    orchestration.run_until_idle()
    workflow.refresh_from_db()
    return workflow


def steps(workflow: WorkRequest) -> dict[str, WorkRequest]:
    return {
        child.workflow_data_json["step"]: child
        for child in WorkRequest.objects.filter(
            parent=workflow, superseded_by__isnull=True
        ).order_by("id")
    }


def build(playground: Playground, work_request: WorkRequest, result: str = SUCCESS) -> None:
    """Complete a build as its worker would: its upload artifact, then its result."""
    work_request.refresh_from_db()
    if result == SUCCESS:
        playground.create_artifact(category="debian:upload", created_by_work_request=work_request)
    assert transitions.complete(work_request, result)
    orchestration.run_until_idle()


@pytest.mark.parametrize(
    ("requested", "source_field", "allow", "deny", "expected"),
    [
        (["amd64", "i386", "all"], ["any", "all"], None, [], ["amd64", "i386", "all"]),
        (["amd64", "i386", "all"], ["all"], None, [], ["all"]),
        (["amd64", "i386", "arm64"], ["amd64", "arm64"], None, [], ["amd64", "arm64"]),
        (["amd64", "i386", "arm64"], ["linux-any"], ["amd64", "arm64"], ["arm64"], ["amd64"]),
        (["amd64", "armhf"], ["any-armhf"], None, [], ["armhf"]),
        (["all"], ["any"], None, [], []),
    ],
)
def test_effective_architectures(
    requested: list[str],
    source_field: list[str],
    allow: list[str] | None,
    deny: list[str],
    expected: list[str],
) -> None:
    data = ArchitecturesData(
        architectures=requested, architectures_allowlist=allow, architectures_denylist=deny
    )

    assert effective_architectures(data, source_field) == expected


def test_sbuild_builds_each_architecture_and_all_on_its_host(
    playground: Playground, owner: User
) -> None:
    package = source(playground)
    workflow = start(
        owner,
        playground,
        "sbuild",
        {
            "input": {"source_artifact": package.pk},
            "architectures": ["amd64", "i386", "all", "arm64"],
            "architectures_denylist": ["arm64"],
            "target_distribution": "debian:trixie",
        },
    )

    builds = steps(workflow)
    assert sorted(builds) == ["build-amd64", "build-i386"]
    amd64 = builds["build-amd64"]
    assert amd64.task_data == {
        "input": {"source_artifact": package.pk},
        "host_architecture": "amd64",
        "environment": "debian/match:codename=trixie",
        "backend": "auto",
        "build_components": ["any", "all"],
    }
    assert builds["build-i386"].task_data["build_components"] == ["any"]
    assert workflow.internal_collection is not None
    promises = {
        item.name: item.data["promise_work_request_id"]
        for item in workflow.internal_collection.child_items.filter(removed_at__isnull=True)
    }
    assert promises == {"build-amd64": amd64.pk, "build-i386": builds["build-i386"].pk}


def test_sbuild_of_an_architecture_independent_source(playground: Playground, owner: User) -> None:
    workflow = start(
        owner,
        playground,
        "sbuild",
        {
            "input": {"source_artifact": source(playground, "all").pk},
            "architectures": ["i386", "all"],
            "arch_all_host_architecture": "arm64",
        },
    )

    (only,) = steps(workflow).values()
    assert (only.workflow_data_json["step"], only.task_data["host_architecture"]) == (
        "build-all",
        "arm64",
    )
    assert only.task_data["build_components"] == ["all"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"architectures": ["i386"], "architectures_allowlist": ["amd64"]}, "no architecture"),
        ({"architectures": ["amd64"], "input": {"source_artifact": 999999}}, "source_artifact"),
    ],
)
def test_sbuild_refuses_input_that_cannot_build(
    playground: Playground, owner: User, data: dict[str, Any], message: str
) -> None:
    data = {"input": {"source_artifact": source(playground).pk}, **data}

    with pytest.raises(WorkflowInputError, match=message):
        start(owner, playground, "sbuild", data)


def test_debian_pipeline_refuses_what_it_does_not_implement(playground: Playground) -> None:
    workflow_class = Workflow.class_from_name("debian_pipeline")

    with pytest.raises(InvalidWorkRequestError, match="enable_confirmation"):
        workflow_class.validate_data(
            {
                "input": {"source_artifact": 1},
                "architectures": ["amd64"],
                "enable_confirmation": True,
            }
        )


def pipeline(owner: User, playground: Playground) -> tuple[WorkRequest, Artifact]:
    package = source(playground)
    workflow = start(
        owner,
        playground,
        "debian_pipeline",
        {"input": {"source_artifact": package.pk}, "architectures": ["amd64", "all"]},
    )
    return workflow, package


def test_the_pipeline_builds_then_checks_every_build(playground: Playground, owner: User) -> None:
    workflow, package = pipeline(owner, playground)
    sbuild, qa = steps(workflow)["sbuild"], steps(workflow)["qa"]
    assert (sbuild.task_type, qa.status) == ("Workflow", BLOCKED)
    (amd64,) = steps(sbuild).values()
    assert amd64.workflow_data_json["step"] == "sbuild|build-amd64"

    build(playground, amd64)

    qa.refresh_from_db()
    assert sorted(steps(qa)) == ["qa|autopkgtest", "qa|lintian", "qa|piuparts"]
    checks = {name: next(iter(steps(sub).values())) for name, sub in steps(qa).items()}
    upload = Artifact.objects.get(created_by_work_request=amd64)
    for check in checks.values():
        assert check.status == PENDING
        found = ServerLookupResolver(check).lookup_multiple(
            check.task_data["input"]["binary_artifacts"], expect_type="artifact"
        )
        assert [result.artifact for result in found] == [upload.pk]
    assert checks["qa|lintian"].task_data["input"]["source_artifact"] == package.pk
    assert checks["qa|piuparts"].task_data["base_tgz"] == (
        "debian/match:codename=bookworm:architecture=amd64"
    )

    for check in checks.values():
        build(playground, check)
    workflow.refresh_from_db()
    assert (workflow.status, workflow.result) == ("completed", SUCCESS)


def test_a_failed_build_fails_the_pipeline_without_checks_and_retry_rebuilds_only_it(
    playground: Playground, owner: User
) -> None:
    workflow, _package = pipeline(owner, playground)
    sbuild, qa = steps(workflow)["sbuild"], steps(workflow)["qa"]
    (failed,) = steps(sbuild).values()

    build(playground, failed, FAILURE)

    workflow.refresh_from_db()
    assert (workflow.status, workflow.result) == ("completed", FAILURE)
    qa.refresh_from_db()
    assert qa.status == ABORTED
    assert not qa.children.exists()

    transitions.retry_workflow(workflow)
    orchestration.run_until_idle()

    (rebuild,) = steps(sbuild).values()
    assert rebuild.supersedes_id == failed.pk
    assert rebuild.status == PENDING
    qa.refresh_from_db()
    assert qa.status == BLOCKED
    build(playground, rebuild)
    qa.refresh_from_db()
    assert len(steps(qa)) == 3
