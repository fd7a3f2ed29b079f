"""
Every API error as an RFC 7807 problem: `application/problem+json` with a title and detail.

Clients check the content type before the status code, so every error path of every API view
must go through `problem_exception_handler` (configured as DRF's EXCEPTION_HANDLER),
`problem_response`, or, for the few plain Django views, `plain_problem_response`.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import Http404, HttpResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

PROBLEM_CONTENT_TYPE = "application/problem+json"


class ProblemError(Exception):
    """An error reported to the client as a problem document."""

    def __init__(
        self,
        title: str,
        detail: Any = None,
        *,
        validation_errors: Any = None,
        status_code: int = status.HTTP_400_BAD_REQUEST,
    ) -> None:
        super().__init__(title)
        self.title = title
        self.detail = detail
        self.validation_errors = validation_errors
        self.status_code = status_code


def problem_response(
    title: str,
    detail: Any = None,
    *,
    validation_errors: Any = None,
    status_code: int = status.HTTP_400_BAD_REQUEST,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build a problem+json response."""
    body = problem_body(title, detail, validation_errors)
    return Response(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def problem_body(title: str, detail: Any = None, validation_errors: Any = None) -> dict[str, Any]:
    """The problem document: `title`, then `detail` and `validation_errors` when given."""
    body: dict[str, Any] = {"title": title}
    if detail is not None:
        body["detail"] = detail
    if validation_errors is not None:
        body["validation_errors"] = validation_errors
    return body


def plain_problem_response(error: ProblemError) -> HttpResponse:
    """
    `error` as a problem+json response from a plain Django view (outside DRF), undoing what
    the view wrote, as the DRF handler does.
    """
    set_rollback()
    body = problem_body(error.title, error.detail, error.validation_errors)
    return HttpResponse(
        json.dumps(body), status=error.status_code, content_type=PROBLEM_CONTENT_TYPE
    )


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: turn every API exception into a problem response."""
    if isinstance(exc, ProblemError):
        # Bad input changes nothing: undo whatever the view wrote before it gave up.
        set_rollback()
        return problem_response(
            exc.title,
            exc.detail,
            validation_errors=exc.validation_errors,
            status_code=exc.status_code,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail: Any = response.data
    if isinstance(detail, dict) and set(detail) == {"detail"}:
        detail = detail["detail"]
    if isinstance(exc, exceptions.ParseError):
        return problem_response(
            "Cannot parse the request body", str(exc.detail), status_code=response.status_code
        )
    if isinstance(exc, exceptions.ValidationError):
        return problem_response(
            "Invalid request", validation_errors=detail, status_code=response.status_code
        )
    headers = {
        key: value for key, value in response.headers.items() if key.lower() != "content-type"
    }
    return problem_response(
        "Error",
        str(detail) if not isinstance(detail, list | dict) else detail,
        status_code=response.status_code,
        headers=headers,
    )
