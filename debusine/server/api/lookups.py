"""
API views: lookups for workers (`/api/1.0/lookup/single/` and `/api/1.0/lookup/multiple/`).

A worker resolves the lookups of the work request it runs, as the server would for that work
request (its workspace, what its creator may see). Only the worker the work request is
assigned to may ask (401 otherwise). Nothing found is 404 "No matches"; a lookup that cannot
be resolved as written is 400 "Lookup error".
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from debusine.protocol.lookups import LookupMultipleRequest, LookupSingleRequest
from debusine.server.api.auth import IsWorker, request_worker
from debusine.server.api.errors import ProblemError
from debusine.server.api.parsing import parse_body
from debusine.server.db.models import WorkRequest
from debusine.server.lookups import InvalidLookupError, LookupNoMatchError, ServerLookupResolver
from debusine.tasks import LookupResult


def result_json(result: LookupResult) -> dict[str, Any]:
    return {
        "result_type": result.result_type,
        "collection_item": result.collection_item,
        "artifact": result.artifact,
        "collection": result.collection,
    }


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


def lookup_problem(error: Exception) -> ProblemError:
    if isinstance(error, LookupNoMatchError):
        return ProblemError("No matches", str(error), status_code=status.HTTP_404_NOT_FOUND)
    return ProblemError("Lookup error", str(error))


class LookupSingleView(APIView):
    """`POST`: the one match of a lookup."""

    permission_classes = [IsWorker]

    def post(self, request: Request) -> Response:
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

    permission_classes = [IsWorker]

    def post(self, request: Request) -> Response:
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
