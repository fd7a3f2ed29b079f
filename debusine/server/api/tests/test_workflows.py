"""Tests of the workflow API: workflow templates (CRUD, permissions) and starting workflows."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission

from debusine.protocol.work_requests import WorkRequestResponse
from debusine.protocol.workflows import WorkflowTemplateResponse
from debusine.server.db.models import (
    Collection,
    User,
    WorkflowTemplate,
    WorkRequest,
    WorkspaceRoles,
)
from debusine.testing.playground import Playground, api_client

TEMPLATES = "/api/1.0/workflow-template/"
WORKFLOWS = "/api/1.0/workflow/"


def assert_problem(response: Any, status_code: int, title: str | None = None) -> dict[str, Any]:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    if title is not None:
        assert body["title"] == title
    return body


@pytest.fixture
def owner(playground: Playground) -> tuple[User, str]:
    user = playground.create_user("olivia")
    playground.grant(user, playground.workspace, WorkspaceRoles.OWNER)
    return user, playground.create_user_token(user)


@pytest.fixture
def template(playground: Playground) -> WorkflowTemplate:
    return WorkflowTemplate.objects.create(
        name="noops",
        workspace=playground.workspace,
        task_name="noop",
        task_data={"children": 2},
        priority=0,
    )


def test_an_owner_creates_a_template(owner: tuple[User, str], playground: Playground) -> None:
    response = api_client(owner[1]).post(
        TEMPLATES,
        {"name": "t", "task_name": "noop", "task_data": {"children": 1}, "priority": 0},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = WorkflowTemplateResponse.model_validate(response.json())
    stored = WorkflowTemplate.objects.get(pk=body.id)
    assert (body.name, body.task_name, body.task_data, body.workspace) == (
        "t",
        "noop",
        {"children": 1},
        playground.workspace.name,
    )
    assert body.url == f"/{playground.scope.name}/{playground.workspace.name}/workflow-template/t/"
    assert stored.task_data == {"children": 1}


def test_a_contributor_cannot_create_a_template(user: User, user_token: str) -> None:
    response = api_client(user_token).post(
        TEMPLATES, {"name": "t", "task_name": "noop", "task_data": {}}, format="json"
    )

    assert_problem(response, 403)
    assert not WorkflowTemplate.objects.exists()


def test_a_positive_priority_needs_the_priority_permission(owner: tuple[User, str]) -> None:
    body = {"name": "t", "task_name": "noop", "task_data": {}, "priority": 5}
    assert_problem(api_client(owner[1]).post(TEMPLATES, body, format="json"), 403)

    owner[0].user_permissions.add(Permission.objects.get(codename="manage_workrequest_priorities"))
    response = api_client(owner[1]).post(TEMPLATES, body, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["priority"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "t", "task_name": "nonesuch", "task_data": {}}, "task_name"),
        ({"name": "noops", "task_name": "noop", "task_data": {}}, "name"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(
    owner: tuple[User, str], template: WorkflowTemplate, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(api_client(owner[1]).post(TEMPLATES, body, format="json"), 400)

    assert field in problem["validation_errors"]
    assert WorkflowTemplate.objects.count() == 1


def test_templates_are_read_changed_and_deleted(
    owner: tuple[User, str], template: WorkflowTemplate
) -> None:
    client = api_client(owner[1])
    url = f"{TEMPLATES}{template.pk}/"

    read = client.get(url)
    assert read.status_code == 200
    assert read.json()["task_data"] == {"children": 2}

    # A client may send back what it read: read-only keys are ignored.
    patched = client.patch(url, {**read.json(), "task_data": {"children": 3}}, format="json")
    assert patched.status_code == 200, patched.content
    assert WorkflowTemplate.objects.get(pk=template.pk).task_data == {"children": 3}

    replaced = client.put(url, {"name": "renamed", "task_name": "noop"}, format="json")
    assert replaced.status_code == 200, replaced.content
    template.refresh_from_db()
    assert (template.name, template.task_data) == ("renamed", {})

    assert client.delete(url).status_code == 204
    assert not WorkflowTemplate.objects.exists()
    assert_problem(client.get(url), 404)


def test_contributors_read_but_do_not_change_templates(
    user_token: str, template: WorkflowTemplate
) -> None:
    client = api_client(user_token)
    url = f"{TEMPLATES}{template.pk}/"

    assert client.get(url).status_code == 200
    assert_problem(client.patch(url, {"task_data": {}}, format="json"), 403)
    assert_problem(client.delete(url), 403)
    assert WorkflowTemplate.objects.get(pk=template.pk).task_data == {"children": 2}


def test_a_template_in_a_hidden_workspace_is_not_found(
    playground: Playground, user_token: str
) -> None:
    private = playground.create_workspace("private")
    hidden = WorkflowTemplate.objects.create(name="h", workspace=private, task_name="noop")

    assert_problem(api_client(user_token).get(f"{TEMPLATES}{hidden.pk}/"), 404)


def test_a_workflow_starts_from_a_template_with_its_data_merged(
    user: User, user_token: str, template: WorkflowTemplate
) -> None:
    response = api_client(user_token).post(
        WORKFLOWS,
        {"template_name": "noops", "task_data": {"children": 9, "result": False}},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = WorkRequestResponse.model_validate(response.json())
    workflow = WorkRequest.objects.get(pk=body.id)
    # The template wins where it sets a key; the user's other keys stay.
    assert body.task_data == {"children": 2, "result": False}
    assert (body.task_type, body.task_name, body.status, body.result) == (
        "Workflow",
        "noop",
        "pending",
        "",
    )
    assert workflow.workflow_template == template
    assert workflow.created_by == user
    assert workflow.internal_collection is not None
    assert workflow.internal_collection.category == "debusine:workflow-internal"
    # Populating is the orchestrator's job, in the workflows queue: not in the request.
    assert not workflow.children.exists()


def test_bad_workflow_data_is_refused_at_creation_with_the_reason(
    user_token: str, template: WorkflowTemplate
) -> None:
    problem = assert_problem(
        api_client(user_token).post(
            WORKFLOWS, {"template_name": "noops", "task_data": {"nonsense": 1}}, format="json"
        ),
        400,
        "Cannot create workflow",
    )

    assert "nonsense" in problem["detail"]
    assert not WorkRequest.objects.exists()
    assert not Collection.objects.filter(category="debusine:workflow-internal").exists()


def test_an_unknown_template_is_404(user_token: str) -> None:
    assert_problem(
        api_client(user_token).post(WORKFLOWS, {"template_name": "nope"}, format="json"),
        404,
        "Workflow template not found",
    )


def test_starting_a_workflow_needs_the_contributor_role(
    playground: Playground, template: WorkflowTemplate
) -> None:
    viewer = playground.create_user("victor")
    playground.grant(viewer, playground.workspace, WorkspaceRoles.VIEWER)

    response = api_client(playground.create_user_token(viewer)).post(
        WORKFLOWS, {"template_name": "noops"}, format="json"
    )

    assert_problem(response, 403)
    assert not WorkRequest.objects.exists()


def test_an_owner_starts_a_workflow_by_task_name_as_016_clients_do(
    owner: tuple[User, str], user_token: str
) -> None:
    body = {"template_name": "", "task_name": "noop", "workspace": "System"}
    started = api_client(owner[1]).post(
        WORKFLOWS, {**body, "task_data": {"children": 1}}, format="json"
    )

    assert started.status_code == 201, started.content
    workflow = WorkRequestResponse.model_validate(started.json())
    assert (workflow.task_type, workflow.task_name, workflow.task_data) == (
        "Workflow",
        "noop",
        {"children": 1},
    )
    assert WorkRequest.objects.get(pk=workflow.id).workflow_template is None
    # Without a template, only owners may: contributors are refused.
    assert_problem(api_client(user_token).post(WORKFLOWS, body, format="json"), 403)
    assert_problem(
        api_client(owner[1]).post(WORKFLOWS, {**body, "task_name": "sbuild"}, format="json"),
        400,
        "Cannot create workflow",
    )
    for both_or_neither in ({"template_name": "noops", "task_name": "noop"}, {}):
        problem = assert_problem(
            api_client(owner[1]).post(WORKFLOWS, both_or_neither, format="json"), 400
        )
        assert "Exactly one of template_name and task_name" in problem["detail"]
