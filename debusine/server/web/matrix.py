"""
The results matrix of a workspace: for each source package, suite and architecture, the latest
`sbuild` work request and how it ended. The package is the name of the build's source artifact,
the suite the codename of its environment (both resolved when the build was assigned: its
dynamic task data), the architecture its `host_architecture`.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import IntegerField, OuterRef, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from debusine.server.db.models import Artifact, WorkRequest
from debusine.server.web.access import visible_workspace

#: The matrix is built from this many of the latest builds.
BUILD_LIMIT = 5000


def artifact_field(id_key: str, field: str) -> Subquery:
    """`data->>field` of the artifact whose id is the build's `dynamic_task_data->>id_key`."""
    return Subquery(
        Artifact.objects.filter(
            pk=Cast(KeyTextTransform(id_key, OuterRef("dynamic_task_data")), IntegerField())
        )
        .annotate(value=KeyTextTransform(field, "data"))
        .values("value")[:1]
    )


@dataclass
class Cell:
    work_request_id: int
    status: str
    result: str


@require_safe
def results_matrix(request: HttpRequest, scope: str, workspace: str) -> HttpResponse:
    """`GET /<scope>/<workspace>/results/`: package x (suite, architecture), latest builds."""
    workspace_object = visible_workspace(request, scope, workspace)
    builds = (
        WorkRequest.objects.filter(
            workspace=workspace_object, task_name="sbuild", dynamic_task_data__isnull=False
        )
        .annotate(
            package=artifact_field("input_source_artifact_id", "name"),
            suite=artifact_field("environment_id", "codename"),
            architecture=KeyTextTransform("host_architecture", "task_data"),
        )
        .values_list("pk", "status", "result", "package", "suite", "architecture")
        .order_by("-pk")[:BUILD_LIMIT]
    )
    cells: dict[tuple[str, str, str], Cell] = {}
    for pk, status, result, package, suite, architecture in builds:
        key = (package or "?", suite or "?", architecture or "?")
        if key not in cells:  # newest first: the first seen is the latest
            cells[key] = Cell(pk, status, result)
    columns = sorted({(suite, architecture) for _package, suite, architecture in cells})
    packages = sorted({package for package, _suite, _architecture in cells})
    rows = [
        (package, [cells.get((package, suite, architecture)) for suite, architecture in columns])
        for package in packages
    ]
    return render(
        request,
        "web/matrix.html",
        {"workspace": workspace_object, "columns": columns, "rows": rows, "limit": BUILD_LIMIT},
    )
