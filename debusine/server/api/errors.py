"""
Every API error as an RFC 7807 problem: `application/problem+json` with a title, a detail and
the status.

Clients check the content type before the status code, so every error path of every API view
must go through `problem_exception_handler` (configured as DRF's EXCEPTION_HANDLER),
`problem_response`, or, for the few plain Django views, `plain_problem_response`. What Django
itself answers under `/api/` (unknown URLs, CSRF failures, bodies over the limit, unhandled
exceptions) becomes a problem too: the error views below are the project's handler400/403/404/
500 and CSRF_FAILURE_VIEW, and `ProblemMiddleware` turns any other error response under `/api/`
into a problem (see docs/reference/api-errors.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from debusine.protocol.generations import Generation, generation_from_user_agent
from debusine.server.api.json_parser import BodyTooLargeError, body_limit_detail
from debusine.server.api.problem import PROBLEM_CONTENT_TYPE, ProblemError, problem_body

__all__ = ["PROBLEM_CONTENT_TYPE", "ProblemError", "problem_body"]

API_PREFIX = "/api/"


def problem_response(
    title: str,
    detail: Any = None,
    *,
    validation_errors: Any = None,
    status_code: int = status.HTTP_400_BAD_REQUEST,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build a problem+json response."""
    body = problem_body(title, detail, validation_errors, status_code)
    return Response(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def plain_problem(
    title: str,
    detail: Any = None,
    *,
    status_code: int = status.HTTP_400_BAD_REQUEST,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """A problem+json response for plain Django code (views, middleware, error handlers)."""
    response = HttpResponse(
        json.dumps(problem_body(title, detail, None, status_code)),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def plain_problem_response(error: ProblemError) -> HttpResponse:
    """
    `error` as a problem+json response from a plain Django view (outside DRF), undoing what
    the view wrote, as the DRF handler does.
    """
    if error.rolls_back:
        set_rollback()
    body = problem_body(error.title, error.detail, error.validation_errors, error.status_code)
    response = HttpResponse(
        json.dumps(body), status=error.status_code, content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in error.headers.items():
        response[name] = value
    return response


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: turn every API exception into a problem response."""
    if isinstance(exc, ProblemError):
        # Bad input changes nothing: undo whatever the view wrote before it gave up.
        if exc.rolls_back:
            set_rollback()
        return problem_response(
            exc.title,
            exc.detail,
            validation_errors=exc.validation_errors,
            status_code=exc.status_code,
            headers=exc.headers,
        )
    if isinstance(exc, BodyTooLargeError):
        return problem_response(
            "Request body too large",
            str(exc.detail),
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
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


# --- Django's own errors under /api/ ---------------------------------------------------------


def is_api_request(request: HttpRequest) -> bool:
    """Whether `request` is for the REST API, whose every error must be a problem."""
    return request.path.startswith(API_PREFIX) or request.path_info.startswith(API_PREFIX)


def body_too_large_problem() -> HttpResponse:
    """413: a request body over DATA_UPLOAD_MAX_MEMORY_SIZE, with the limit in the detail."""
    return plain_problem(
        "Request body too large",
        body_limit_detail(),
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: bad requests Django refused before any view (and RequestDataTooBig)."""
    if not is_api_request(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return body_too_large_problem()
    return plain_problem("Bad request", str(exception) or None, status_code=400)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler403."""
    if not is_api_request(request):
        return defaults.permission_denied(request, exception)
    return plain_problem("Permission denied", str(exception) or None, status_code=403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: unknown URLs (and ids that are not numbers) under /api/."""
    if not is_api_request(request):
        return defaults.page_not_found(request, exception)
    return plain_problem(
        "Not found", f"No API endpoint or object at {request.path}", status_code=404
    )


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: Django has logged the exception (once, with its traceback)."""
    if not is_api_request(request):
        return defaults.server_error(request)
    return plain_problem(
        "Internal server error",
        "The server failed to handle the request; the error is in its log.",
        status_code=500,
    )


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a session-authenticated POST without a valid CSRF token."""
    if not is_api_request(request):
        return django_csrf_failure(request, reason)
    return plain_problem("CSRF verification failed", reason or None, status_code=403)


#: The problem keys a Debusine 0.16 client accepts (besides `status_code`).
V016_PROBLEM_KEYS = ("title", "detail", "validation_errors")


class ProblemMiddleware:
    """
    Under `/api/`: every error response that is not a problem yet becomes one, and a body over
    the size limit read by a view (RequestDataTooBig) is a 413 problem, not a logged 400.

    Installed first, so that it also sees what other middleware answers. Streams and the plain
    404 of an unknown scope (protocol.md §0: Debusine clients need it plain) are left alone;
    success responses, including the empty bodies of 200/201/204, are never touched.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code < 400
            or response.streaming
            or getattr(response, "keep_plain", False)
            or not is_api_request(request)
        ):
            return response
        if response.get("Content-Type", "").split(";")[0].strip() != PROBLEM_CONTENT_TYPE:
            response = self.as_problem(response)
        if generation_from_user_agent(request.headers.get("User-Agent")) is Generation.V0_16:
            response = self.for_v016_client(response)
        return response

    @staticmethod
    def for_v016_client(response: HttpResponse) -> HttpResponse:
        """
        The problem with only the keys a Debusine 0.16 client accepts (protocol-versions.md
        §2.4 C1: it passes the body's keys as arguments, so any other key makes it crash):
        `title`, `detail`, `validation_errors`, and `status` renamed `status_code`.
        """
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            try:
                body = {"title": HTTPStatus(response.status_code).phrase}
            except ValueError:
                body = {"title": "Error"}
        kept = {key: body[key] for key in V016_PROBLEM_KEYS if key in body}
        kept.setdefault("title", "Error")
        if "status" in body:
            kept["status_code"] = body["status"]
        response.content = json.dumps(kept).encode()
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        return response

    @staticmethod
    def as_problem(response: HttpResponse) -> HttpResponse:
        """`response` as a problem with the same status and headers; short text kept as detail."""
        try:
            title = HTTPStatus(response.status_code).phrase
        except ValueError:
            title = "Error"
        detail: str | None = None
        if response.get("Content-Type", "").startswith("text/plain"):
            text = response.content.decode("utf-8", "replace").strip()
            detail = text[:500] or None
        problem = plain_problem(title, detail, status_code=response.status_code)
        for name, value in response.items():
            if name.lower() not in {"content-type", "content-length"}:
                problem[name] = value
        # Django logs an error response once; keep its record of having done so.
        problem._has_been_logged = getattr(  # type: ignore[attr-defined]
            response, "_has_been_logged", False
        )
        return problem

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, RequestDataTooBig) and is_api_request(request):
            return body_too_large_problem()
        return None
