"""
API views: create an artifact (`POST /api/1.0/artifact/`) and read one (`GET .../artifact/<id>/`).

Also home of `artifact_json()`, the one serialisation of the Artifact object, and of
`visible_artifacts()`, the one rule of who sees which artifact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
from django.conf import settings
from django.db.models import QuerySet
from django.urls import URLPattern, path
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from debusine.artifacts.models import ArtifactDataError, validate_artifact_data
from debusine.protocol.artifacts import ArtifactCreateRequest, FileRequest, quote_artifact_path
from debusine.protocol.wire import iso_datetime
from debusine.server.api.auth import IsUserOrWorker, request_worker
from debusine.server.api.errors import ProblemError
from debusine.server.api.middleware import request_scope
from debusine.server.api.parsing import validation_problem
from debusine.server.db.models import (
    Artifact,
    FileInArtifact,
    Scope,
    User,
    WorkRequest,
    Workspace,
)
from debusine.server.db.models.artifacts import ArtifactQuerySet, NewArtifactFile


def visible_artifacts(request: Request) -> ArtifactQuerySet:
    """
    Artifacts the caller of `request` may read.

    Workers see every artifact: they fetch the inputs of whatever they were assigned, and they
    never send a scope header. Users and anonymous callers see artifacts of the request's scope
    in workspaces they can display.
    """
    if request_worker(request) is not None:
        return Artifact.objects.all()
    return Artifact.objects.in_scope(request_scope(request)).can_display(request.user)


def artifact_not_found(artifact_id: int) -> ProblemError:
    # The same answer whether the artifact does not exist or is hidden from the caller.
    return ProblemError(f"Artifact {artifact_id} not found", status_code=status.HTTP_404_NOT_FOUND)


def artifact_json(
    request: Request, artifact: Artifact, files: Sequence[FileInArtifact] | None = None
) -> dict[str, Any]:
    """
    The Artifact object of the wire protocol.

    `artifact.workspace.scope` should be loaded already (select_related). `files` are the
    artifact's FileInArtifact rows with their File, loaded here in one query when not given.
    Download URLs are absolute (scheme and host as the client reached us, X-Forwarded-Proto
    included) because clients fetch them as they are.
    """
    if files is None:
        files = list(artifact.fileinartifact_set.select_related("file").order_by("path"))
    workspace = artifact.workspace
    artifact_path = f"/{workspace.scope.name}/{workspace.name}/artifact/{artifact.pk}/"
    download_base = request.build_absolute_uri(f"{artifact_path}download/")
    by_path = sorted(files, key=lambda file_in_artifact: file_in_artifact.path)
    return {
        "id": artifact.pk,
        "url": artifact_path,
        "scope": workspace.scope.name,
        "workspace": workspace.name,
        "category": artifact.category,
        "data": artifact.data,
        "created_at": iso_datetime(artifact.created_at),
        "expire_at": iso_datetime(artifact.expire_at),
        "download_tar_gz_url": f"{download_base}?archive=tar.gz",
        "files_to_upload": [entry.path for entry in by_path if not entry.complete],
        # Debusine 0.16: web-UI and API links (its client's rich output reads `webui_self`).
        "links": {
            "self": request.build_absolute_uri(f"/api/1.0/artifact/{artifact.pk}/"),
            "webui_self": artifact_path,
            "download_tar_gz": {
                "href": f"{download_base}?archive=tar.gz",
                "type": "application/tar+gzip",
            },
        },
        "files": {
            entry.path: {
                "size": entry.file.size,
                "type": "file",
                "checksums": {"sha256": entry.file.hash_hex},
                "url": download_base + quote_artifact_path(entry.path),
                "content_type": entry.content_type,
            }
            for entry in by_path
        },
    }


def workspace_for_new_artifact(scope: Scope, name: str, user: User | None) -> Workspace:
    """
    The workspace of `scope` in which the caller may create an artifact.

    `user` None means a worker, which may create artifacts in any workspace of the scope. A
    user who cannot see a private workspace gets the same 404 as for a missing one.
    """
    workspace = Workspace.objects.select_related("scope").filter(scope=scope, name=name).first()
    not_found = ProblemError(
        f"Workspace {name!r} not found", status_code=status.HTTP_404_NOT_FOUND
    )
    if workspace is None:
        raise not_found
    if user is not None and not workspace.can_create_artifacts(user):
        if not workspace.can_display(user):
            raise not_found
        raise ProblemError(
            f"You cannot create artifacts in workspace {name!r}",
            status_code=status.HTTP_403_FORBIDDEN,
        )
    return workspace


def check_file_sizes(files: Mapping[str, FileRequest]) -> None:
    """Refuse (413) files larger than DEBUSINE_MAX_FILE_SIZE, before anything is stored."""
    limit: int = settings.DEBUSINE_MAX_FILE_SIZE
    if limit <= 0:
        return
    too_large = sorted(path for path, file in files.items() if file.size > limit)
    if too_large:
        raise ProblemError(
            "Cannot create artifact: file too large",
            f"{', '.join(too_large)}: larger than the limit of {limit} bytes per file",
            validation_errors={
                f"files.{path}.size": [f"more than {limit} bytes"] for path in too_large
            },
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )


def checked_artifact_data(category: str, data: dict[str, Any]) -> dict[str, Any]:
    """
    `data` as validated for `category` (400 listing every problem if it does not fit).

    Data of categories we have no model for is accepted as it is, as Debusine servers do.
    """
    try:
        return validate_artifact_data(category, data)
    except ArtifactDataError as error:
        validation_errors: dict[str, list[str]] = {}
        for location, message in error.problems:
            validation_errors.setdefault(location, []).append(message)
        raise ProblemError(
            "Invalid artifact data",
            f"Invalid data for category {category}: "
            + "; ".join(f"{location}: {message}" for location, message in error.problems),
            validation_errors=validation_errors,
        ) from None


class ArtifactCreateView(APIView):
    """`POST /api/1.0/artifact/`: create an artifact and learn which files to upload."""

    permission_classes = [IsUserOrWorker]

    def post(self, request: Request) -> Response:
        try:
            body = ArtifactCreateRequest.model_validate(request.data)
        except pydantic.ValidationError as error:
            raise validation_problem("Cannot create artifact: invalid request", error) from None

        check_file_sizes(body.files)
        data = checked_artifact_data(body.category, body.data)
        user: User | None = None
        scope = request_scope(request)
        if body.work_request is not None:
            worker = request_worker(request)
            if worker is None:
                raise ProblemError(
                    "work_request can only be set with a worker token",
                    status_code=status.HTTP_403_FORBIDDEN,
                )
            work_request = (
                WorkRequest.objects.select_related("workspace__scope")
                .filter(pk=body.work_request)
                .first()
            )
            if work_request is None:
                raise ProblemError(f"Work request {body.work_request} does not exist")
            if work_request.worker_id != worker.id:
                # A worker records outputs only of the work it was given, so that a worker
                # token cannot plant artifacts in any workspace of any scope.
                raise ProblemError(
                    f"Work request {work_request.pk} is not assigned to this worker",
                    status_code=status.HTTP_403_FORBIDDEN,
                )
            # Workers send no scope header: their outputs belong to the work request's scope.
            scope = work_request.workspace.scope
        else:
            if not isinstance(request.user, User):
                raise ProblemError(
                    "An artifact without work_request must be created with a user token",
                    status_code=status.HTTP_403_FORBIDDEN,
                )
            user = request.user

        workspace = workspace_for_new_artifact(
            scope, body.workspace or settings.DEBUSINE_DEFAULT_WORKSPACE, user
        )
        artifact, files = Artifact.objects.create_with_files(
            workspace=workspace,
            category=body.category,
            data=data,
            files=[
                NewArtifactFile(path, file.sha256, file.size, file.content_type)
                for path, file in body.files.items()
            ],
            created_by=user,
            created_by_work_request_id=body.work_request,
            expiration_delay=body.expiration_delay,
        )
        return Response(artifact_json(request, artifact, files), status=status.HTTP_201_CREATED)


class ArtifactDetailView(APIView):
    """`GET /api/1.0/artifact/<id>/` (and without the slash, as Debusine clients call it)."""

    def get(self, request: Request, artifact_id: int) -> Response:
        artifacts: QuerySet[Artifact] = visible_artifacts(request).select_related(
            "workspace__scope"
        )
        artifact = artifacts.filter(pk=artifact_id).first()
        if artifact is None:
            raise artifact_not_found(artifact_id)
        return Response(artifact_json(request, artifact))


class WorkspaceArtifactView(APIView):
    """
    `GET /api/1.0/artifact/<workspace>/<id>/` (Debusine 0.16, protocol-versions.md §3.2): the
    artifact as seen from a workspace of the request's scope, as 0.16 tasks fetch their inputs.

    Our workspaces do not inherit artifacts from one another: the artifact must be visible to
    the caller (as for `artifact/<id>/`) and the workspace must exist and be visible too.
    """

    def get(self, request: Request, workspace: str, artifact_id: int) -> Response:
        scope = request_scope(request)
        found = Workspace.objects.filter(scope=scope, name=workspace).first()
        worker = request_worker(request) is not None
        if found is None or not (worker or found.can_display(request.user)):
            raise ProblemError(
                f"Workspace {workspace!r} not found", status_code=status.HTTP_404_NOT_FOUND
            )
        artifacts: QuerySet[Artifact] = visible_artifacts(request).select_related(
            "workspace__scope"
        )
        artifact = artifacts.filter(pk=artifact_id).first()
        if artifact is None:
            raise artifact_not_found(artifact_id)
        return Response(artifact_json(request, artifact))


urlpatterns: list[URLPattern] = [
    path("artifact/", ArtifactCreateView.as_view(), name="api-artifact-create"),
    path("artifact/<int:artifact_id>/", ArtifactDetailView.as_view(), name="api-artifact"),
    # Served directly rather than redirected: one round trip fewer for every download.
    path("artifact/<int:artifact_id>", ArtifactDetailView.as_view()),
    path(
        "artifact/<str:workspace>/<int:artifact_id>/",
        WorkspaceArtifactView.as_view(),
        name="api-workspace-artifact",
    ),
]
