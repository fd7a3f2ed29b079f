"""Tests of the workflow API: workflow templates (CRUD, permissions) and starting workflows."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission

from debusine.protocol.work_requests import WorkRequestResponse
from debusine.protocol.workflows import WorkflowTemplateResponse, WorkspaceTemplateResponse
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


# Debusine 0.16: `/1.0/workflow-template/{workspace}/…`

WORKSPACE_TEMPLATES = "/api/1.0/workflow-template/System/"


def test_the_v016_template_family(owner: tuple[User, str], playground: Playground) -> None:
    client = api_client(owner[1])
    group = playground.create_group("reviewers")
    created = client.post(
        WORKSPACE_TEMPLATES,
        {
            "name": "noops.v2",
            "task_name": "noop",
            "static_parameters": {"children": 1},
            "runtime_parameters": {"result": [True, False]},
            "priority": 0,
            "extra_groups": ["reviewers"],
            "restricted": False,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    body = WorkspaceTemplateResponse.model_validate(created.json())
    assert body.static_parameters == {"children": 1}
    assert body.extra_groups == ["reviewers"]
    assert body.links["webui_self"] == (
        f"/{playground.scope.name}/System/workflow-template/noops.v2/"
    )
    stored = WorkflowTemplate.objects.get(pk=body.id)
    assert list(stored.extra_groups.all()) == [group]

    # By name (dots included) or id; pages of templates by name.
    by_name = client.get(f"{WORKSPACE_TEMPLATES}noops.v2/")
    assert by_name.json()["id"] == body.id
    etag = by_name["ETag"]
    assert client.get(f"{WORKSPACE_TEMPLATES}{body.id}/").json()["name"] == "noops.v2"
    listed = client.get(WORKSPACE_TEMPLATES).json()
    assert (listed["count"], listed["next"], [t["name"] for t in listed["results"]]) == (
        1,
        None,
        ["noops.v2"],
    )
    # The old family still sees it, with its task data.
    assert client.get(f"{TEMPLATES}{body.id}/").json()["task_data"] == {"children": 1}

    # PATCH takes the whole object as read; the workflow cannot change.
    changed = client.patch(
        f"{WORKSPACE_TEMPLATES}{body.id}/",
        {**by_name.json(), "name": "renamed", "restricted": True},
        format="json",
        HTTP_IF_MATCH=etag,
    )
    assert changed.status_code == 200, changed.content
    assert (changed.json()["name"], changed.json()["restricted"]) == ("renamed", True)
    stale = client.delete(f"{WORKSPACE_TEMPLATES}{body.id}/", HTTP_IF_MATCH=etag)
    assert_problem(stale, 412, "Workflow template changed")
    assert_problem(
        client.patch(f"{WORKSPACE_TEMPLATES}{body.id}/", {"task_name": "other"}, format="json"),
        400,
    )
    assert client.delete(f"{WORKSPACE_TEMPLATES}renamed/").status_code == 204
    assert not WorkflowTemplate.objects.exists()


def test_v016_template_refusals(
    owner: tuple[User, str], user_token: str, template: WorkflowTemplate
) -> None:
    client = api_client(owner[1])
    new = {"name": "x", "task_name": "noop", "static_parameters": {}}
    assert_problem(api_client(user_token).post(WORKSPACE_TEMPLATES, new, format="json"), 403)
    assert_problem(
        client.post(WORKSPACE_TEMPLATES, {**new, "task_name": "nope"}, format="json"), 400
    )
    assert_problem(
        client.post(WORKSPACE_TEMPLATES, {**new, "name": template.name}, format="json"), 400
    )
    assert_problem(
        client.post(WORKSPACE_TEMPLATES, {**new, "extra_groups": ["ghosts"]}, format="json"), 400
    )
    assert_problem(client.get(f"{WORKSPACE_TEMPLATES}missing/"), 404)
    assert WorkflowTemplate.objects.count() == 1


def test_runtime_parameters_bound_what_users_set(
    owner: tuple[User, str], user_token: str, playground: Playground
) -> None:
    WorkflowTemplate.objects.create(
        name="bounded",
        workspace=playground.workspace,
        task_name="noop",
        task_data={"children": 1},
        runtime_parameters={"result": [False]},
    )
    contributor = api_client(user_token)

    started = contributor.post(
        WORKFLOWS,
        {
            "template_name": "bounded",
            "task_name": "",
            "workspace": "System",
            "task_data": {"result": False},
        },
        format="json",
    )
    assert started.status_code == 201, started.content
    for task_data in ({"result": True}, {"children": 3}):
        refused = contributor.post(
            WORKFLOWS,
            {
                "template_name": "bounded",
                "task_name": "",
                "workspace": "System",
                "task_data": task_data,
            },
            format="json",
        )
        assert_problem(refused, 400, "Cannot create workflow")
    assert WorkRequest.objects.filter(task_type="Workflow").count() == 1


def test_a_restricted_template_is_for_owners_and_its_groups(
    owner: tuple[User, str], user: User, user_token: str, playground: Playground
) -> None:
    template = WorkflowTemplate.objects.create(
        name="locked", workspace=playground.workspace, task_name="noop", restricted=True
    )
    body = {"template_name": "locked", "task_name": "", "workspace": "System", "task_data": {}}
    assert_problem(api_client(user_token).post(WORKFLOWS, body, format="json"), 403)

    template.extra_groups.add(playground.create_group("releasers", [user]))
    assert api_client(user_token).post(WORKFLOWS, body, format="json").status_code == 201
    assert api_client(owner[1]).post(WORKFLOWS, body, format="json").status_code == 201
