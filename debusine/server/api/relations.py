"""
API views: relations between artifacts (`/api/1.0/artifact-relation/`).

Anyone may list the relations of an artifact they can see; creating and deleting them needs a
token (a user who may add artifacts to the source's workspace, or the worker whose work request
created the source). A relation is only ever shown, made or removed when the caller can see
both of its artifacts, so relations never reveal artifacts of a private workspace.
"""

from __future__ import annotations

from typing import Any

import pydantic
from django.urls import URLPattern, path
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from debusine.protocol.artifacts import RelationCreateRequest
from debusine.server.api.artifacts import artifact_not_found, visible_artifacts
from debusine.server.api.auth import IsUserOrWorker, request_worker
from debusine.server.api.errors import ProblemError
from debusine.server.api.parsing import validation_problem
from debusine.server.db.models import Artifact, ArtifactRelation, FileInArtifact, User


def relation_json(relation: ArtifactRelation) -> dict[str, Any]:
    """The relation object of the wire protocol."""
    return {
        "id": relation.pk,
        "artifact": relation.artifact_id,
        "target": relation.target_id,
        "type": relation.type,
    }


class ReadOrToken(permissions.BasePermission):
    """Reading is open (visibility is checked per object); writing needs a user or worker."""

    message = IsUserOrWorker.message

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return IsUserOrWorker().has_permission(request, view)


def check_can_change_relations_of(request: Request, artifact: Artifact) -> None:
    """
    Refuse (403) a user who may not add artifacts to the workspace of `artifact`.

    Relations belong to their source artifact, so changing them is a write to its workspace.
    Workers link the outputs of their work to other artifacts: a worker may change the
    relations of artifacts created by a work request assigned to it, and no others.
    """
    worker = request_worker(request)
    if worker is not None:
        if not artifact.written_by_worker(worker.id):
            raise ProblemError(
                f"You cannot change the relations of artifact {artifact.pk}",
                "Workers may only relate artifacts created by their own work requests",
                status_code=status.HTTP_403_FORBIDDEN,
            )
        return
    if not (
        isinstance(request.user, User) and artifact.workspace.can_create_artifacts(request.user)
    ):
        raise ProblemError(
            f"You cannot change the relations of artifact {artifact.pk}",
            status_code=status.HTTP_403_FORBIDDEN,
        )


def parse_artifact_id(value: str, parameter: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ProblemError(
            f"Invalid {parameter!r} parameter", f"{value!r} is not an artifact ID"
        ) from None


class ArtifactRelationListView(APIView):
    """List the relations of one artifact (GET), or create one (POST)."""

    permission_classes = [ReadOrToken]

    def get(self, request: Request) -> Response:
        visible = visible_artifacts(request)
        if (value := request.query_params.get("artifact")) is not None:
            artifact_id = parse_artifact_id(value, "artifact")
            relations = ArtifactRelation.objects.filter(
                artifact_id=artifact_id, target__in=visible
            )
        elif (value := request.query_params.get("target_artifact")) is not None:
            artifact_id = parse_artifact_id(value, "target_artifact")
            relations = ArtifactRelation.objects.filter(
                target_id=artifact_id, artifact__in=visible
            )
        else:
            raise ProblemError(
                "Missing parameter", "Give the 'artifact' or the 'target_artifact' parameter"
            )
        if not visible.filter(pk=artifact_id).exists():
            raise artifact_not_found(artifact_id)
        return Response([relation_json(relation) for relation in relations.order_by("pk")])

    def post(self, request: Request) -> Response:
        try:
            body = RelationCreateRequest.model_validate(request.data)
        except pydantic.ValidationError as error:
            raise validation_problem("Cannot create relation: invalid request", error) from None
        if body.artifact == body.target:
            raise ProblemError("Cannot create relation", "An artifact cannot relate to itself")

        found = {
            artifact.pk: artifact
            for artifact in visible_artifacts(request)
            .select_related("workspace", "created_by_work_request")
            .filter(pk__in=[body.artifact, body.target])
        }
        for artifact_id in (body.artifact, body.target):
            if artifact_id not in found:
                raise artifact_not_found(artifact_id)
        check_can_change_relations_of(request, found[body.artifact])

        incomplete = sorted(
            FileInArtifact.objects.filter(
                artifact_id__in=[body.artifact, body.target], complete=False
            )
            .values_list("artifact_id", flat=True)
            .distinct()
        )
        if incomplete:
            raise ProblemError(
                "Cannot create relation",
                "Artifacts with files still to upload: "
                + ", ".join(str(artifact_id) for artifact_id in incomplete),
            )

        relation, created = ArtifactRelation.objects.get_or_create(
            artifact_id=body.artifact, target_id=body.target, type=body.type.value
        )
        return Response(
            relation_json(relation),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ArtifactRelationDetailView(APIView):
    """Delete a relation (DELETE)."""

    permission_classes = [IsUserOrWorker]

    def delete(self, request: Request, relation_id: int) -> Response:
        visible = visible_artifacts(request)
        relation = (
            ArtifactRelation.objects.select_related(
                "artifact__workspace", "artifact__created_by_work_request"
            )
            .filter(pk=relation_id, artifact__in=visible, target__in=visible)
            .first()
        )
        if relation is None:
            raise ProblemError(
                f"Relation {relation_id} not found", status_code=status.HTTP_404_NOT_FOUND
            )
        check_can_change_relations_of(request, relation.artifact)
        relation.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns: list[URLPattern] = [
    path(
        "artifact-relation/",
        ArtifactRelationListView.as_view(),
        name="api-artifact-relations",
    ),
    path(
        "artifact-relation/<int:relation_id>/",
        ArtifactRelationDetailView.as_view(),
        name="api-artifact-relation",
    ),
]
