"""
API views of workflows (protocol.md §2.5, the Debusine 0.11 to 0.14 shapes):

- `POST /1.0/workflow-template/`: create a template (workspace owners; a positive priority
  needs the priority permission), 201;
- `GET`/`PUT`/`PATCH`/`DELETE /1.0/workflow-template/{id}/`: read, replace, change, delete;
- `POST /1.0/workflow/`: start a workflow from a template, 201 WorkRequest. The template's
  task data is merged over the user's (the template wins where it sets a key), and the result
  is validated by the workflow before anything is stored: bad data is a 400 with the reason.

Workflows are populated by their orchestrator in the `workflows` Celery queue, never here.
"""

from __future__ import annotations

from typing import Any

import pydantic
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.urls import URLPattern, path
from rest_framework import status
from rest_framework.request import Request
from rest_framework.views import APIView

from debusine.protocol.workflows import (
    WorkflowCreateRequest,
    WorkflowTemplateCreateRequest,
    WorkflowTemplateResponse,
    WorkflowTemplateUpdateRequest,
    WorkspaceTemplateCreateRequest,
    WorkspaceTemplateResponse,
    WorkspaceTemplateUpdateRequest,
)
from debusine.server.api.auth import IsUser
from debusine.server.api.errors import ProblemError
from debusine.server.api.middleware import request_scope_name
from debusine.server.api.pages import check_if_match, entity_tag, json_response, paginated
from debusine.server.api.parsing import parse_body, validation_problem
from debusine.server.api.work_requests import (
    MANAGE_PRIORITIES_PERMISSION,
    WorkRequestListView,
    forbidden,
    request_user,
)
from debusine.server.db.models import Group, User, WorkflowTemplate, Workspace
from debusine.server.work_requests import serialization, transitions
from debusine.server.work_requests.transitions import InvalidWorkRequestError
from debusine.server.workflows.base import (
    CANNOT_CREATE,
    UnknownWorkflowError,
    Workflow,
    WorkflowInputError,
)


def template_response(template: WorkflowTemplate, status_code: int = 200) -> HttpResponse:
    workspace = template.workspace
    return serialization.json_response(
        WorkflowTemplateResponse(
            id=template.pk,
            url=f"/{workspace.scope.name}/{workspace.name}/workflow-template/{template.name}/",
            name=template.name,
            scope=workspace.scope.name,
            workspace=workspace.name,
            task_name=template.task_name,
            task_data=template.task_data,
            priority=template.priority,
        ),
        status_code,
    )


def check_task_name(task_name: str) -> None:
    if task_name not in Workflow.names():
        raise ProblemError(
            "Invalid workflow template",
            f"{task_name!r} is not a workflow: expected one of {', '.join(Workflow.names())}",
            validation_errors={"task_name": [f"{task_name!r} is not a registered workflow"]},
        )


def check_may_configure(user: User, workspace: Workspace, priority: int) -> None:
    """Workspace owners manage templates; a positive priority needs the priority permission."""
    if not workspace.can_configure(user):
        raise forbidden(f"{user.username} cannot configure workspace {workspace.name}")
    if priority > 0 and not user.has_perm(MANAGE_PRIORITIES_PERMISSION):
        raise forbidden(f"{user.username} cannot set a positive priority ({priority})")


def save_template(template: WorkflowTemplate) -> None:
    try:
        with transaction.atomic():
            template.save()
    except IntegrityError:
        raise ProblemError(
            "Invalid workflow template",
            f"workspace {template.workspace.name} already has a template {template.name!r}",
            validation_errors={"name": ["a template of this name already exists"]},
        ) from None


class WorkflowTemplateListView(APIView):
    """`POST`: create a workflow template."""

    permission_classes = [IsUser]

    def post(self, request: Request) -> HttpResponse:
        body = parse_body(request, WorkflowTemplateCreateRequest, "Invalid workflow template")
        user = request_user(request)
        workspace = WorkRequestListView.workspace(
            request, body.workspace or settings.DEBUSINE_DEFAULT_WORKSPACE
        )
        check_may_configure(user, workspace, body.priority)
        check_task_name(body.task_name)
        template = WorkflowTemplate(
            name=body.name,
            workspace=workspace,
            task_name=body.task_name,
            task_data=body.task_data,
            priority=body.priority,
        )
        save_template(template)
        return template_response(template, status.HTTP_201_CREATED)


class WorkflowTemplateDetailView(APIView):
    """`GET`, `PUT`, `PATCH`, `DELETE` one workflow template."""

    permission_classes = [IsUser]

    @staticmethod
    def template(request: Request, template_id: int) -> WorkflowTemplate:
        """The template, if the caller may see its workspace; else a 404 problem."""
        template = (
            WorkflowTemplate.objects.select_related("workspace__scope")
            .filter(pk=template_id, workspace__scope__name=request_scope_name(request))
            .filter(workspace__in=Workspace.objects.can_display(request.user))
            .first()
        )
        if template is None:
            raise ProblemError(
                f"Workflow template {template_id} not found",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        return template

    def get(self, request: Request, template_id: int) -> HttpResponse:
        return template_response(self.template(request, template_id))

    def put(self, request: Request, template_id: int) -> HttpResponse:
        return self.update(request, template_id, partial=False)

    def patch(self, request: Request, template_id: int) -> HttpResponse:
        return self.update(request, template_id, partial=True)

    def update(self, request: Request, template_id: int, *, partial: bool) -> HttpResponse:
        template = self.template(request, template_id)
        if not isinstance(request.data, dict):
            raise ProblemError("Invalid workflow template", "The body must be a JSON object.")
        try:
            body = WorkflowTemplateUpdateRequest.model_validate(request.data)
        except pydantic.ValidationError as error:
            raise validation_problem("Invalid workflow template", error) from None
        if not partial:
            missing = [key for key in ("name", "task_name") if getattr(body, key) is None]
            if missing:
                raise ProblemError(
                    "Invalid workflow template",
                    f"PUT needs every field: missing {', '.join(missing)}",
                    validation_errors={key: ["This field is required."] for key in missing},
                )
        user = request_user(request)
        priority = body.priority if body.priority is not None else template.priority
        check_may_configure(user, template.workspace, priority if body.priority else 0)
        if body.task_name is not None:
            check_task_name(body.task_name)
            template.task_name = body.task_name
        if body.name is not None:
            template.name = body.name
        if body.task_data is not None or not partial:
            template.task_data = body.task_data or {}
        if body.priority is not None or not partial:
            template.priority = body.priority or 0
        save_template(template)
        return template_response(template)

    def delete(self, request: Request, template_id: int) -> HttpResponse:
        template = self.template(request, template_id)
        check_may_configure(request_user(request), template.workspace, 0)
        template.delete()
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)


# --- Debusine 0.16: `/1.0/workflow-template/{workspace}/…` ----------------------------------


def workspace_template_body(template: WorkflowTemplate) -> WorkspaceTemplateResponse:
    workspace = template.workspace
    return WorkspaceTemplateResponse(
        id=template.pk,
        name=template.name,
        task_name=template.task_name,
        static_parameters=template.task_data,
        runtime_parameters=template.runtime_parameters,
        priority=template.priority,
        extra_groups=sorted(group.name for group in template.extra_groups.all()),
        restricted=template.restricted,
        links={
            "self": f"/api/1.0/workflow-template/{workspace.name}/{template.pk}/",
            "webui_self": (
                f"/{workspace.scope.name}/{workspace.name}/workflow-template/{template.name}/"
            ),
        },
    )


def workspace_template_response(
    template: WorkflowTemplate, status_code: int = 200
) -> HttpResponse:
    body = workspace_template_body(template)
    return json_response(body, status_code, etag=entity_tag(body.model_dump(mode="json")))


def groups_named(workspace: Workspace, references: list[int | str]) -> list[Group]:
    """The groups of the workspace's scope that `references` (names or ids) name; 400 if not."""
    groups: list[Group] = []
    for reference in references:
        queryset = Group.objects.filter(scope=workspace.scope)
        group = (
            queryset.filter(pk=reference)
            if isinstance(reference, int)
            else queryset.filter(name=reference)
        ).first()
        if group is None:
            raise ProblemError(
                "Invalid workflow template",
                f"scope {workspace.scope.name} has no group {reference!r}",
                validation_errors={"extra_groups": [f"no group {reference!r}"]},
            )
        groups.append(group)
    return groups


class WorkspaceTemplateListView(APIView):
    """`GET`: the workspace's templates by name (pages). `POST`: create one (201)."""

    permission_classes = [IsUser]

    def get(self, request: Request, workspace: str) -> HttpResponse:
        space = WorkRequestListView.workspace(request, workspace)
        rows = (
            WorkflowTemplate.objects.filter(workspace=space)
            .select_related("workspace__scope")
            .prefetch_related("extra_groups")
            .order_by("name")
        )
        return paginated(request, rows, workspace_template_body)

    def post(self, request: Request, workspace: str) -> HttpResponse:
        space = WorkRequestListView.workspace(request, workspace)
        body = parse_body(request, WorkspaceTemplateCreateRequest, "Invalid workflow template")
        check_may_configure(request_user(request), space, body.priority)
        check_task_name(body.task_name)
        groups = groups_named(space, body.extra_groups)
        template = WorkflowTemplate(
            name=body.name,
            workspace=space,
            task_name=body.task_name,
            task_data=body.static_parameters,
            runtime_parameters=body.runtime_parameters,
            priority=body.priority,
            restricted=body.restricted,
        )
        save_template(template)
        template.extra_groups.set(groups)
        return workspace_template_response(template, status.HTTP_201_CREATED)


class WorkspaceTemplateDetailView(APIView):
    """`GET` a template by id or name, `PATCH` it, `DELETE` it (`If-Match` optional)."""

    permission_classes = [IsUser]

    @staticmethod
    def template(request: Request, workspace: str, template: str) -> WorkflowTemplate:
        space = WorkRequestListView.workspace(request, workspace)
        queryset = WorkflowTemplate.objects.filter(workspace=space).select_related(
            "workspace__scope"
        )
        found = (
            queryset.filter(pk=int(template))
            if template.isdigit()
            else queryset.filter(name=template)
        ).first()
        if found is None:
            raise ProblemError(
                f"Workflow template {template} not found",
                f"workspace {space.name} has no workflow template {template!r}",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        return found

    def get(self, request: Request, workspace: str, template: str) -> HttpResponse:
        return workspace_template_response(self.template(request, workspace, template))

    def patch(self, request: Request, workspace: str, template: str) -> HttpResponse:
        found = self.template(request, workspace, template)
        if not isinstance(request.data, dict):
            raise ProblemError("Invalid workflow template", "The body must be a JSON object.")
        try:
            body = WorkspaceTemplateUpdateRequest.model_validate(request.data)
        except pydantic.ValidationError as error:
            raise validation_problem("Invalid workflow template", error) from None
        user = request_user(request)
        check_may_configure(user, found.workspace, body.priority or 0)
        check_if_match(
            request,
            entity_tag(workspace_template_body(found).model_dump(mode="json")),
            "Workflow template",
        )
        if body.task_name is not None and body.task_name != found.task_name:
            raise ProblemError(
                "Invalid workflow template",
                f"the workflow of a template cannot change ({found.task_name})",
                validation_errors={"task_name": ["the workflow cannot change"]},
            )
        if body.name is not None:
            found.name = body.name
        if body.static_parameters is not None:
            found.task_data = body.static_parameters
        if body.runtime_parameters is not None:
            found.runtime_parameters = body.runtime_parameters
        if body.priority is not None:
            found.priority = body.priority
        if body.restricted is not None:
            found.restricted = body.restricted
        save_template(found)
        if body.extra_groups is not None:
            found.extra_groups.set(groups_named(found.workspace, body.extra_groups))
        return workspace_template_response(found)

    def delete(self, request: Request, workspace: str, template: str) -> HttpResponse:
        found = self.template(request, workspace, template)
        check_may_configure(request_user(request), found.workspace, 0)
        check_if_match(
            request,
            entity_tag(workspace_template_body(found).model_dump(mode="json")),
            "Workflow template",
        )
        found.delete()
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)


def check_runtime_parameters(template: WorkflowTemplate, task_data: dict[str, Any]) -> None:
    """
    Refuse task data the template does not let users set (Debusine 0.16's runtime parameters):
    a key it does not name, or a value outside its list. "any" allows everything.
    """
    allowed = template.runtime_parameters
    if allowed == "any":
        return
    refused: dict[str, list[str]] = {}
    for key, value in task_data.items():
        rule = allowed.get(key) if isinstance(allowed, dict) else None
        if rule is None:
            refused[key] = [f"template {template.name} does not let users set {key!r}"]
        elif rule != "any" and value not in rule:
            refused[key] = [f"{value!r} is not one of {rule!r}"]
    if refused:
        raise ProblemError(
            CANNOT_CREATE,
            f"template {template.name} does not allow: {', '.join(sorted(refused))}",
            validation_errors=refused,
        )


def check_may_start(user: User, workspace: Workspace, template: WorkflowTemplate) -> None:
    """A restricted template is for workspace owners and members of its extra groups."""
    if not template.restricted or workspace.can_configure(user):
        return
    if template.extra_groups.filter(users=user).exists():
        return
    raise forbidden(f"{user.username} cannot start restricted template {template.name}")


def merged_task_data(template: WorkflowTemplate, task_data: dict[str, Any]) -> dict[str, Any]:
    """The user's task data with the template's over it: the template wins where it sets a key."""
    return {**task_data, **template.task_data}


class WorkflowCreateView(APIView):
    """`POST`: start a workflow from a template; 201 WorkRequest."""

    permission_classes = [IsUser]

    def post(self, request: Request) -> HttpResponse:
        body = parse_body(request, WorkflowCreateRequest, CANNOT_CREATE)
        user = request_user(request)
        workspace = WorkRequestListView.workspace(
            request, body.workspace or settings.DEBUSINE_DEFAULT_WORKSPACE
        )
        if bool(body.task_name) == bool(body.template_name):
            raise ProblemError(
                CANNOT_CREATE,
                "Exactly one of template_name and task_name must be set",
                validation_errors={
                    "template_name": ["exactly one of template_name and task_name must be set"]
                },
            )
        if body.task_name:
            return self.without_template(request, workspace, body.task_name, body.task_data)
        template = (
            WorkflowTemplate.objects.filter(workspace=workspace, name=body.template_name)
            .select_related("workspace__scope")
            .first()
        )
        if template is None:
            raise ProblemError(
                "Workflow template not found",
                f"workspace {workspace.name} has no workflow template {body.template_name!r}",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        if not workspace.user_can_contribute:  # type: ignore[attr-defined]
            raise forbidden(f"{user.username} cannot create workflows in {workspace.name}")
        check_may_start(user, workspace, template)
        check_runtime_parameters(template, body.task_data)
        try:
            workflow_class = Workflow.class_from_name(template.task_name)
            task_data = workflow_class.validate_data(merged_task_data(template, body.task_data))
            workflow = transitions.create_workflow(
                workspace=workspace,
                created_by=user,
                task_name=template.task_name,
                task_data=task_data,
                priority_base=template.priority,
                workflow_template=template,
            )
            workflow_class(workflow).validate_input()
        except UnknownWorkflowError:
            raise ProblemError(
                CANNOT_CREATE, f"template {template.name}: unknown workflow {template.task_name!r}"
            ) from None
        except InvalidWorkRequestError as error:
            raise ProblemError(
                CANNOT_CREATE, error.detail, validation_errors=error.validation_errors
            ) from None
        except WorkflowInputError as error:
            raise ProblemError(CANNOT_CREATE, str(error)) from None
        workflow.artifact_ids = []  # type: ignore[attr-defined]
        return serialization.work_request_response(workflow, status.HTTP_201_CREATED)

    @staticmethod
    def without_template(
        request: Request, workspace: Workspace, task_name: str, task_data: dict[str, Any]
    ) -> HttpResponse:
        """
        Start workflow `task_name` with `task_data` as given (Debusine 0.16's `workflow start
        --no-template`, `archive package copy`): for owners of the workspace only, since no
        template bounds what it does.
        """
        user = request_user(request)
        if not workspace.can_configure(user):
            raise forbidden(
                f"{user.username} cannot start workflows without a template in {workspace.name}"
            )
        try:
            workflow_class = Workflow.class_from_name(task_name)
        except UnknownWorkflowError:
            raise ProblemError(
                CANNOT_CREATE,
                f"{task_name!r} is not a workflow: expected one of {', '.join(Workflow.names())}",
                validation_errors={"task_name": [f"{task_name!r} is not a registered workflow"]},
            ) from None
        try:
            workflow = transitions.create_workflow(
                workspace=workspace,
                created_by=user,
                task_name=task_name,
                task_data=workflow_class.validate_data(task_data),
                priority_base=0,
                workflow_template=None,
            )
            workflow_class(workflow).validate_input()
        except InvalidWorkRequestError as error:
            raise ProblemError(
                CANNOT_CREATE, error.detail, validation_errors=error.validation_errors
            ) from None
        except WorkflowInputError as error:
            raise ProblemError(CANNOT_CREATE, str(error)) from None
        workflow.artifact_ids = []  # type: ignore[attr-defined]
        return serialization.work_request_response(workflow, status.HTTP_201_CREATED)


urlpatterns: list[URLPattern] = [
    path("workflow-template/", WorkflowTemplateListView.as_view(), name="api-workflow-templates"),
    path(
        "workflow-template/<int:template_id>/",
        WorkflowTemplateDetailView.as_view(),
        name="api-workflow-template",
    ),
    path("workflow/", WorkflowCreateView.as_view(), name="api-workflows"),
    # After the int route above: a workspace whose name is all digits would be shadowed.
    path(
        "workflow-template/<str:workspace>/",
        WorkspaceTemplateListView.as_view(),
        name="api-workspace-workflow-templates",
    ),
    path(
        "workflow-template/<str:workspace>/<str:template>/",
        WorkspaceTemplateDetailView.as_view(),
        name="api-workspace-workflow-template",
    ),
]
