"""
Helpers of the API endpoints Debusine 0.16 added: page-number pagination with absolute URLs
(`{count, next, previous, results}`, `?page=N`) and entity tags (`ETag` / `If-Match`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from pydantic import BaseModel
from rest_framework import status
from rest_framework.request import Request

from debusine.server.api.errors import ProblemError

#: Items per page of these lists (Debusine's page size).
PAGE_SIZE = 10


def json_response(
    body: BaseModel | dict[str, Any], status_code: int = 200, etag: str | None = None
) -> HttpResponse:
    text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body)
    response = HttpResponse(text, status=status_code, content_type="application/json")
    if etag is not None:
        response["ETag"] = etag
    return response


def entity_tag(value: Any) -> str:
    """A strong entity tag of a JSON-serialisable state."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    return f'"{digest[:32]}"'


def check_if_match(request: Request, current: str, what: str) -> None:
    """412 when the request's `If-Match` names none of `current` (absent `If-Match` passes)."""
    header = request.headers.get("If-Match")
    if header is None:
        return
    candidates = [candidate.strip().removeprefix("W/") for candidate in header.split(",")]
    if "*" in candidates or current in candidates:
        return
    raise ProblemError(
        f"{what} changed",
        f"If-Match {header} does not match the current entity tag {current}",
        status_code=status.HTTP_412_PRECONDITION_FAILED,
    )


def paginated(
    request: Request, rows: QuerySet[Any] | Sequence[Any], serialize: Callable[[Any], BaseModel]
) -> HttpResponse:
    """One page (`?page=N`, from 1) of `rows`: `{count, next, previous, results}`."""
    raw = request.query_params.get("page", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ProblemError("Invalid page", f"page={raw!r} is not a page number", status_code=404)
    number = int(raw)
    count = rows.count() if isinstance(rows, QuerySet) else len(rows)
    start = (number - 1) * PAGE_SIZE
    if start and start >= count:
        raise ProblemError("Invalid page", f"There is no page {number}", status_code=404)

    def url(page: int) -> str:
        query = request.query_params.copy()
        query["page"] = str(page)
        return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

    return json_response(
        {
            "count": count,
            "next": url(number + 1) if start + PAGE_SIZE < count else None,
            "previous": url(number - 1) if number > 1 else None,
            "results": [
                serialize(row).model_dump(mode="json") for row in rows[start : start + PAGE_SIZE]
            ],
        }
    )
