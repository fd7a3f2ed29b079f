"""
The problem document (RFC 7807) and the exception that carries one.

Kept apart from `errors` (which imports DRF's views) so that modules DRF loads while it is
itself being imported, such as the authentication class, can raise problems.
"""

from __future__ import annotations

from typing import Any

from rest_framework import status

PROBLEM_CONTENT_TYPE = "application/problem+json"


class ProblemError(Exception):
    """An error reported to the client as a problem document."""

    #: Whether the request's transaction is undone: bad input changes nothing. Refusals made
    #: before the view ran (a token that is not valid) keep what they recorded.
    rolls_back = True

    def __init__(
        self,
        title: str,
        detail: Any = None,
        *,
        validation_errors: Any = None,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        self.title = title
        self.detail = detail
        self.validation_errors = validation_errors
        self.status_code = status_code
        self.headers = headers or {}


def problem_body(
    title: str, detail: Any = None, validation_errors: Any = None, status_code: int | None = None
) -> dict[str, Any]:
    """
    The problem document: `title`, `detail` (the title again when there is nothing to add),
    then `validation_errors` and `status` when given.

    Debusine clients read `title`, `detail` and `validation_errors` and ignore other keys.
    """
    body: dict[str, Any] = {"title": title, "detail": title if detail is None else detail}
    if validation_errors is not None:
        body["validation_errors"] = validation_errors
    if status_code is not None:
        body["status"] = status_code
    return body
