"""Tests of the server-side event reaction `update-collection-with-artifacts`."""

from __future__ import annotations

from typing import Any

import pytest

from debusine.protocol.work_requests import ManualUnblockAction
from debusine.server.db.models import Collection, CollectionItem, User, WorkRequest
from debusine.server.event_reactions import VariableError, expand_variables
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import Completion, InvalidWorkRequestError
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db

FILE_TARBALL: dict[str, Any] = {
    "action": "update-collection-with-artifacts",
    "collection": "debian@debian:environments",
    "variables": {"$codename": "codename", "backend": "unshare"},
    "artifact_filters": {"category": "debian:system-tarball"},
}


@pytest.fixture
def environments(playground: Playground) -> Collection:
    return Collection.objects.create(
        name="debian", category="debian:environments", workspace=playground.workspace
    )


def create(playground: Playground, user: User, reactions: Any, **options: Any) -> WorkRequest:
    return transitions.create(
        workspace=playground.workspace,
        created_by=user,
        task_type="Worker",
        task_name="noop",
        task_data={},
        event_reactions=reactions,
        **options,
    )


def outputs(playground: Playground, work_request: WorkRequest) -> None:
    """What an mmdebstrap run leaves: a tarball and its debug logs."""
    for category in ("debian:system-tarball", "debusine:work-request-debug-logs"):
        playground.create_artifact(
            category=category,
            data={"codename": "bookworm", "architecture": "amd64"},
            created_by_work_request=work_request,
        )


def test_users_may_not_set_server_actions(playground: Playground, user: User) -> None:
    with pytest.raises(InvalidWorkRequestError, match="'update-collection-with-artifacts' is not"):
        create(playground, user, {"on_success": [FILE_TARBALL]})
    assert not WorkRequest.objects.exists()


def test_artifact_filters_are_checked(playground: Playground, user: User) -> None:
    action = {**FILE_TARBALL, "artifact_filters": {"created_by__username": "x"}}
    with pytest.raises(InvalidWorkRequestError, match="unknown artifact filter"):
        create(playground, user, {"on_success": [action]}, allow_server_actions=True)


def test_success_files_the_matching_artifacts(
    playground: Playground, user: User, environments: Collection
) -> None:
    work_request = create(
        playground, user, {"on_success": [FILE_TARBALL]}, allow_server_actions=True
    )
    outputs(playground, work_request)

    assert transitions.complete(work_request, "success")

    item = CollectionItem.objects.get(parent_collection=environments)
    assert item.name == "tarball:bookworm:amd64::unshare"
    assert item.artifact is not None and item.artifact.category == "debian:system-tarball"
    assert item.created_by_user == user
    assert item.data["backend"] == "unshare"


def test_failure_files_nothing(
    playground: Playground, user: User, environments: Collection
) -> None:
    work_request = create(
        playground, user, {"on_success": [FILE_TARBALL]}, allow_server_actions=True
    )
    outputs(playground, work_request)

    transitions.complete(work_request, "failure")

    assert not CollectionItem.objects.exists()


def test_worker_completion_runs_the_reactions(
    playground: Playground, user: User, environments: Collection
) -> None:
    worker = playground.create_connected_worker()
    work_request = create(
        playground, user, {"on_success": [FILE_TARBALL]}, allow_server_actions=True
    )
    WorkRequest.objects.filter(pk=work_request.pk).update(worker=worker, status="running")
    outputs(playground, work_request)

    outcome = transitions.complete_from_worker(worker.pk, work_request.pk, "success", None)

    assert outcome is Completion.RECORDED
    assert CollectionItem.objects.filter(parent_collection=environments).count() == 1


def test_a_missing_collection_is_logged_not_fatal(
    playground: Playground, user: User, caplog: pytest.LogCaptureFixture
) -> None:
    work_request = create(
        playground, user, {"on_success": [FILE_TARBALL]}, allow_server_actions=True
    )
    outputs(playground, work_request)

    assert transitions.complete(work_request, "success")

    assert "debian@debian:environments" in caplog.text
    work_request.refresh_from_db()
    assert work_request.result == "success"


def test_expand_variables() -> None:
    data = {"codename": "trixie", "nested": {"key": 1}}
    assert expand_variables(
        {"$codename": "$.codename", "$deep": "nested.key", "variant": "sbuild"}, data
    ) == {"codename": "trixie", "deep": 1, "variant": "sbuild"}
    with pytest.raises(VariableError, match="no 'missing'"):
        expand_variables({"$x": "missing"}, data)


def test_a_reviewers_accept_runs_the_on_unblock_reactions(
    playground: Playground, user: User, environments: Collection
) -> None:
    step = create(
        playground,
        user,
        {"on_unblock": [FILE_TARBALL]},
        allow_server_actions=True,
        unblock_strategy="manual",
    )
    outputs(playground, step)
    transitions.manual_unblock(step, user, notes="not yet")
    assert not CollectionItem.objects.filter(parent_collection=environments).exists()

    transitions.manual_unblock(step, user, action=ManualUnblockAction.ACCEPT)

    item = CollectionItem.objects.get(parent_collection=environments)
    assert item.name == "tarball:bookworm:amd64::unshare"
