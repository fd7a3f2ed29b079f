"""Web pages: the site home, a scope's workspaces, and a workspace's home page."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from debusine.protocol.work_requests import TaskType
from debusine.server.db.models import Artifact, Collection, Scope, WorkRequest, Workspace
from debusine.server.web.access import request_user, visible_workspace
from debusine.server.web.listing import WORK_REQUEST_ROW_FIELDS, work_request_rows

#: How many of each kind of thing a workspace's home page lists.
RECENT = 20


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """`GET /`: the workspaces the user can see, by scope."""
    workspaces = (
        Workspace.objects.can_display(request_user(request))
        .select_related("scope")
        .order_by("scope__name", "name")[:500]
    )
    return render(request, "web/home.html", {"workspaces": workspaces})


@require_safe
def scope_home(request: HttpRequest, scope: str) -> HttpResponse:
    """`GET /<scope>/`: the scope's workspaces the user can see (404 for an unknown scope)."""
    scope_object = Scope.objects.filter(name=scope).first()
    if scope_object is None:
        raise Http404(f"No scope {scope!r}")
    workspaces = (
        Workspace.objects.can_display(request_user(request))
        .filter(scope=scope_object)
        .order_by("name")[:500]
    )
    return render(request, "web/scope.html", {"scope": scope_object, "workspaces": workspaces})


@require_safe
def workspace_home(request: HttpRequest, scope: str, workspace: str) -> HttpResponse:
    """`GET /<scope>/<workspace>/`: recent work requests and workflows, collections, artifacts."""
    workspace_object = visible_workspace(request, scope, workspace)
    recent = (
        WorkRequest.objects.filter(workspace=workspace_object)
        .select_related("worker")
        .only(*WORK_REQUEST_ROW_FIELDS)
    )
    prefix = f"/{scope}/{workspace}/"
    context = {
        "workspace": workspace_object,
        "work_requests": work_request_rows(list(recent.order_by("-pk")[:RECENT]), prefix),
        "workflows": work_request_rows(
            list(
                recent.filter(task_type=TaskType.WORKFLOW, parent__isnull=True).order_by("-pk")[
                    :RECENT
                ]
            ),
            prefix,
        ),
        "collections": list(
            Collection.objects.filter(workspace=workspace_object)
            .only("id", "name", "category")
            .order_by("category", "name")[:RECENT]
        ),
        "artifacts": list(
            Artifact.objects.filter(workspace=workspace_object)
            .only("id", "category", "created_at")
            .order_by("-pk")[:RECENT]
        ),
    }
    return render(request, "web/workspace.html", context)
