"""
The worker daemon's own calls to the server's REST API (protocol.md §2.1), over one aiohttp
session: registration, dynamic metadata, fetching and completing work requests.

One session for the daemon's whole life keeps connections alive between work requests; every
call sends the worker token in a lowercase `token` header and no scope header, as Debusine
workers do. Artifacts (the debug logs) are created and uploaded through the client's
`DebusineClient`, the one upload implementation, run in a thread: see
`debusine.tasks.execution.upload_debug_logs`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import aiohttp
from pydantic import ValidationError

from debusine.protocol.work_requests import LenientWorkRequestResponse
from debusine.protocol.workers import WorkerRegisterRequest, WorkRequestCompletedRequest

logger = logging.getLogger(__name__)


class ServerError(Exception):
    """A call to the server failed; the message says which call and why (one line)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        #: Whether trying again later may succeed (no answer, or a 5xx/429 answer).
        self.transient = transient


def _status_is_transient(status: int) -> bool:
    return status >= 500 or status == 429


async def _error_from(response: aiohttp.ClientResponse, call: str) -> ServerError:
    """A ServerError describing an unexpected answer, with the problem's title if any."""
    detail = ""
    try:
        body = await response.text()
    except (aiohttp.ClientError, UnicodeDecodeError):
        body = ""
    if response.content_type == "application/problem+json":
        try:
            problem = await response.json(content_type=None)
            detail = f": {problem.get('title')}"
            if problem.get("detail"):
                detail += f" ({problem['detail']})"
        except (ValueError, aiohttp.ClientError, AttributeError):
            detail = f": {body[:200]}"
    elif body:
        detail = f": {body[:200]!r}"
    return ServerError(
        f"{call} answered {response.status}{detail}",
        transient=_status_is_transient(response.status),
    )


class ServerAPI:
    """The REST calls of a worker to the server at `api_url`."""

    def __init__(self, session: aiohttp.ClientSession, api_url: str, token: str | None) -> None:
        self.session = session
        self.api_url = api_url
        self.token = token

    def _headers(self, token: str | None = None) -> dict[str, str]:
        token = token if token is not None else self.token
        return {"token": token} if token else {}

    async def _request(
        self,
        method: str,
        path: str,
        call: str,
        *,
        token: str | None = None,
        extra_headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """Send a request and read the whole answer; connection problems → ServerError."""
        url = f"{self.api_url}{path}"
        headers = self._headers(token)
        if extra_headers:
            headers.update(extra_headers)
        try:
            async with self.session.request(method, url, headers=headers, **kwargs) as response:
                return response, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            reason = str(error) or type(error).__name__
            raise ServerError(f"{call}: cannot reach {url}: {reason}", transient=True) from None

    async def register(
        self,
        token: str,
        fqdn: str,
        activation_token: str | None,
        worker_type: Literal["external", "signing"] = "external",
    ) -> None:
        """`POST /1.0/worker/register/`; anything but 201 raises ServerError."""
        call = "worker registration"
        body = WorkerRegisterRequest(token=token, fqdn=fqdn, worker_type=worker_type).model_dump()
        response, _content = await self._request(
            "POST", "/1.0/worker/register/", call, token=activation_token or "", json=body
        )
        if response.status != 201:
            raise await _error_from(response, call)

    async def put_dynamic_metadata(self, metadata: dict[str, Any]) -> int:
        """`PUT /1.0/worker/dynamic-metadata/`; return the status (204 expected)."""
        response, _content = await self._request(
            "PUT", "/1.0/worker/dynamic-metadata/", "dynamic metadata update", json=metadata
        )
        return response.status

    async def get_next_work_request(self) -> LenientWorkRequestResponse | None:
        """
        `GET /1.0/work-request/get-next-for-worker/`: the work request assigned to this worker,
        now marked running by the server, or None when there is none (204).
        """
        call = "get-next-for-worker"
        response, content = await self._request(
            "GET", "/1.0/work-request/get-next-for-worker/", call
        )
        if response.status == 204:
            return None
        if response.status != 200:
            raise await _error_from(response, call)
        try:
            return LenientWorkRequestResponse.model_validate_json(content)
        except ValidationError as error:
            raise ServerError(
                f"{call} answered an invalid work request: {error.errors()[0]['msg']}",
                transient=False,
            ) from None

    async def complete_work_request(
        self, work_request_id: int, report: WorkRequestCompletedRequest
    ) -> None:
        """`PUT /1.0/work-request/{id}/completed/`; it must answer 200 with an empty body."""
        call = f"completion of work request {work_request_id}"
        # Only what was set goes out (no null statistics), as Debusine workers send it.
        body = report.model_dump(mode="json", exclude_unset=True)
        response, content = await self._request(
            "PUT", f"/1.0/work-request/{work_request_id}/completed/", call, json=body
        )
        if response.status != 200:
            raise await _error_from(response, call)
        if content:
            raise ServerError(f"{call} answered 200 with a non-empty body", transient=False)
