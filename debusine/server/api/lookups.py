"""
API views: lookups (`/api/1.0/lookup/single/` and `/api/1.0/lookup/multiple/`), in two shapes.

- Debusine 0.11/0.12 (no `workspace` in the body): a worker resolves the lookups of the work
  request it runs, as the server would for that work request (its workspace, what its creator
  may see). Only the worker the work request is assigned to may ask (401 otherwise). Results
  use one-letter types and item ids.
- Debusine 0.16 (`workspace` in the body): a user resolves a lookup in a workspace of the
  request's scope, with what that user may see. Results use full-word types, carry the item
  itself (`{name, category, data}`), the collection's name and category, the lookup of the
  item's parent collection, and links.

Nothing found is 404 "No matches"; a lookup that cannot be resolved as written is 400
"Lookup error".
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from debusine.protocol.lookups import (
    CollectionInfo,
    CollectionItemInfo,
    LookupMultipleRequest,
    LookupSingleRequest,
    V016LookupMultipleRequest,
    V016LookupResponse,
    V016LookupSingleRequest,
)
from debusine.server.api.auth import IsUser, IsUserOrWorker, request_worker
from debusine.server.api.errors import ProblemError
from debusine.server.api.parsing import parse_body
from debusine.server.api.work_requests import WorkRequestListView
from debusine.server.db.models import Artifact, Collection, CollectionItem, WorkRequest
from debusine.server.lookups import (
    InvalidLookupError,
    LookupContext,
    LookupNoMatchError,
    ServerLookupResolver,
)
from debusine.tasks import LookupResult


def result_json(result: LookupResult) -> dict[str, Any]:
    return {
        "result_type": result.result_type,
        "collection_item": result.collection_item,
        "artifact": result.artifact,
        "collection": result.collection,
    }


def require_worker(request: Request) -> None:
    """The 0.11/0.12 shape is for workers only (as before 0.16 lookups existed)."""
    if request_worker(request) is None:
        raise ProblemError(
            "Permission denied",
            "Lookups for a work request need a worker token (or give a workspace).",
            status_code=status.HTTP_403_FORBIDDEN,
        )


def resolver_for(request: Request, work_request_id: int) -> ServerLookupResolver:
    """The resolver of the work request, which must be assigned to the calling worker."""
    worker = request_worker(request)
    assert worker is not None
    work_request = (
        WorkRequest.objects.select_related("workspace", "created_by")
        .filter(pk=work_request_id, worker_id=worker.id)
        .first()
    )
    if work_request is None:
        raise ProblemError(
            "Invalid work request",
            f"Work request {work_request_id} is not assigned to worker {worker.name}",
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    return ServerLookupResolver(work_request)


LETTER_TYPES = {"b": "bare", "a": "artifact", "c": "collection"}


def is_v016(request: Request) -> bool:
    return isinstance(request.data, dict) and "workspace" in request.data


def user_context(request: Request, workspace_name: str) -> LookupContext:
    """A 0.16 lookup: the caller must be a user; the workspace must be visible to them."""
    if not IsUser().has_permission(request, None):
        raise ProblemError(
            "Permission denied",
            "Lookups in a workspace need a user token.",
            status_code=status.HTTP_403_FORBIDDEN,
        )
    workspace = WorkRequestListView.workspace(request, workspace_name)
    return LookupContext(workspace, request.user)


def collection_links(collection: Collection) -> tuple[str, str]:
    """The API and web UI paths of a collection."""
    workspace = collection.workspace
    return (
        f"/api/1.0/collection/{workspace.name}/{collection.pk}/",
        f"/{workspace.scope.name}/{workspace.name}/collection/"
        f"{collection.category}/{collection.name}/",
    )


def v016_result_json(result: LookupResult) -> dict[str, Any]:
    """A result in the 0.16 shape (a few queries per result: lookups return few)."""
    item_info = parent_lookup = collection_info = None
    links: dict[str, str] = {}
    if result.collection_item is not None:
        item = CollectionItem.objects.select_related("parent_collection__workspace__scope").get(
            pk=result.collection_item
        )
        item_info = CollectionItemInfo(name=item.name, category=item.category, data=item.data)
        parent = item.parent_collection
        parent_lookup = f"{parent.name}@{parent.category}"
        links["parent_collection"], links["webui_parent_collection"] = collection_links(parent)
    if result.artifact is not None:
        artifact = Artifact.objects.select_related("workspace__scope").get(pk=result.artifact)
        workspace = artifact.workspace
        links["self"] = f"/api/1.0/artifact/{artifact.pk}/"
        links["webui_self"] = f"/{workspace.scope.name}/{workspace.name}/artifact/{artifact.pk}/"
    if result.collection is not None:
        collection = Collection.objects.select_related("workspace__scope").get(
            pk=result.collection
        )
        collection_info = CollectionInfo(name=collection.name, category=collection.category)
        links["self"], links["webui_self"] = collection_links(collection)
    return V016LookupResponse(
        result_type=LETTER_TYPES[result.result_type],  # type: ignore[arg-type]
        collection_item=item_info,
        artifact=result.artifact,
        collection=result.collection,
        collection_info=collection_info,
        parent_collection_lookup=parent_lookup,
        links=links,
    ).model_dump(mode="json")


def lookup_problem(error: Exception) -> ProblemError:
    if isinstance(error, LookupNoMatchError):
        return ProblemError("No matches", str(error), status_code=status.HTTP_404_NOT_FOUND)
    return ProblemError("Lookup error", str(error))


class LookupSingleView(APIView):
    """`POST`: the one match of a lookup."""

    permission_classes = [IsUserOrWorker]

    def post(self, request: Request) -> Response:
        if is_v016(request):
            new = parse_body(request, V016LookupSingleRequest, "Cannot deserialize lookup")
            context = user_context(request, new.workspace)
            try:
                found = context.lookup_single(
                    new.lookup,
                    expect_type=LETTER_TYPES.get(new.expect_type, new.expect_type),
                    default_category=new.default_category,
                )
            except (LookupNoMatchError, InvalidLookupError) as error:
                raise lookup_problem(error) from None
            return Response(v016_result_json(found))
        require_worker(request)
        body = parse_body(request, LookupSingleRequest, "Invalid lookup request")
        resolver = resolver_for(request, body.work_request)
        try:
            result = resolver.lookup_single(
                body.lookup, expect_type=body.expect_type, default_category=body.default_category
            )
        except (LookupNoMatchError, InvalidLookupError) as error:
            raise lookup_problem(error) from None
        return Response(result_json(result))


class LookupMultipleView(APIView):
    """`POST`: every match of a list (or dictionary) lookup."""

    permission_classes = [IsUserOrWorker]

    def post(self, request: Request) -> Response:
        if is_v016(request):
            new = parse_body(request, V016LookupMultipleRequest, "Cannot deserialize lookup")
            context = user_context(request, new.workspace)
            try:
                found = context.lookup_multiple(
                    new.lookup,
                    expect_type=LETTER_TYPES.get(new.expect_type, new.expect_type),
                    default_category=new.default_category,
                )
            except (LookupNoMatchError, InvalidLookupError) as error:
                raise lookup_problem(error) from None
            return Response([v016_result_json(result) for result in found])
        require_worker(request)
        body = parse_body(request, LookupMultipleRequest, "Invalid lookup request")
        resolver = resolver_for(request, body.work_request)
        try:
            results = resolver.lookup_multiple(
                body.lookup, expect_type=body.expect_type, default_category=body.default_category
            )
        except (LookupNoMatchError, InvalidLookupError) as error:
            raise lookup_problem(error) from None
        return Response([result_json(result) for result in results])


urlpatterns: list[URLPattern] = [
    path("lookup/single/", LookupSingleView.as_view(), name="api-lookup-single"),
    path("lookup/multiple/", LookupMultipleView.as_view(), name="api-lookup-multiple"),
]
