"""
The worker's calls to the server's REST API (protocol.md §2.1, §2.3), over one aiohttp session.

One session for the daemon's whole life keeps connections alive between work requests; every
call sends the worker token in a lowercase `token` header and no scope header, as Debusine
workers do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ValidationError

from debusine.tasks.execution import DEBUG_LOG_CONTENT_TYPE

logger = logging.getLogger(__name__)

#: Largest upload request body: files are sent in chunks of this size, as Debusine does.
UPLOAD_CHUNK_SIZE = 50 * 1024 * 1024

#: Times a file is sent again when the server finds its hash does not match.
UPLOAD_ATTEMPTS = 3

DEBUG_LOGS_CATEGORY = "debusine:work-request-debug-logs"


class ServerError(Exception):
    """A call to the server failed; the message says which call and why (one line)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        #: Whether trying again later may succeed (no answer, or a 5xx/429 answer).
        self.transient = transient


class AssignedWorkRequest(BaseModel):
    """The parts of the WorkRequest object a worker uses (other keys are ignored)."""

    id: int
    task_type: str
    task_name: str
    task_data: dict[str, Any]
    dynamic_task_data: dict[str, Any] | None = None
    workspace: str


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

    async def register(self, token: str, fqdn: str, activation_token: str | None) -> None:
        """`POST /1.0/worker/register/`; anything but 201 raises ServerError."""
        call = "worker registration"
        body = {"token": token, "fqdn": fqdn, "worker_type": "external"}
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

    async def get_next_work_request(self) -> AssignedWorkRequest | None:
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
            return AssignedWorkRequest.model_validate_json(content)
        except ValidationError as error:
            raise ServerError(
                f"{call} answered an invalid work request: {error.errors()[0]['msg']}",
                transient=False,
            ) from None

    async def complete_work_request(self, work_request_id: int, body: dict[str, Any]) -> None:
        """`PUT /1.0/work-request/{id}/completed/`; it must answer 200 with an empty body."""
        call = f"completion of work request {work_request_id}"
        response, content = await self._request(
            "PUT", f"/1.0/work-request/{work_request_id}/completed/", call, json=body
        )
        if response.status != 200:
            raise await _error_from(response, call)
        if content:
            raise ServerError(f"{call} answered 200 with a non-empty body", transient=False)

    async def upload_debug_logs(
        self, work_request_id: int, workspace: str, files: list[Path]
    ) -> int:
        """
        Create the work request's `debusine:work-request-debug-logs` artifact in `workspace`
        holding `files` (named by their base names) and upload their contents; return its ID.
        """
        described = await asyncio.to_thread(_describe_files, files)
        body = {
            "category": DEBUG_LOGS_CATEGORY,
            "workspace": workspace,
            "files": {name: description for name, (description, _path) in described.items()},
            "data": {},
            "work_request": work_request_id,
        }
        call = f"debug-log artifact of work request {work_request_id}"
        response, content = await self._request("POST", "/1.0/artifact/", call, json=body)
        if response.status != 201:
            raise await _error_from(response, call)
        try:
            artifact = json.loads(content)
            artifact_id = int(artifact["id"])
            to_upload = [str(name) for name in artifact["files_to_upload"]]
        except (ValueError, KeyError, TypeError):
            raise ServerError(f"{call}: invalid Artifact object", transient=False) from None
        for name in to_upload:
            if name not in described:
                raise ServerError(
                    f"{call}: the server asks for unknown file {name!r}", transient=False
                )
            description, path = described[name]
            await self.upload_file(artifact_id, name, path, int(description["size"]))
        return artifact_id

    async def upload_file(self, artifact_id: int, name: str, path: Path, size: int) -> None:
        """
        Send the contents of `path` as file `name` of artifact `artifact_id`, in chunks, each
        with a `Content-Range` (the form every Debusine server accepts). A hash mismatch
        (409) starts the file again, up to UPLOAD_ATTEMPTS times.
        """
        url_path = f"/1.0/artifact/{artifact_id}/files/{quote(name, safe='/')}/"
        call = f"upload of {name!r} to artifact {artifact_id}"
        for _attempt in range(UPLOAD_ATTEMPTS):
            offset = 0
            while offset < size:
                chunk = await asyncio.to_thread(_read_chunk, path, offset, UPLOAD_CHUNK_SIZE)
                if not chunk:
                    raise ServerError(
                        f"{call}: {path} is shorter than {size} bytes", transient=False
                    )
                end = offset + len(chunk) - 1
                response, _content = await self._request(
                    "PUT",
                    url_path,
                    call,
                    data=chunk,
                    extra_headers={"Content-Range": f"bytes {offset}-{end}/{size}"},
                    # Raw bytes with no Content-Type, as Debusine clients send them.
                    skip_auto_headers=["Content-Type"],
                )
                if response.status == 201:
                    return
                if response.status == 409:
                    logger.warning("%s: the server found a hash mismatch, sending it again", call)
                    break
                if response.status != 200:
                    raise await _error_from(response, call)
                offset = end + 1
            else:
                raise ServerError(
                    f"{call}: all bytes sent but the file is not complete", transient=False
                )
        raise ServerError(f"{call}: hash mismatch {UPLOAD_ATTEMPTS} times", transient=False)


def _read_chunk(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as stream:
        stream.seek(offset)
        return stream.read(length)


def _describe_files(files: list[Path]) -> dict[str, tuple[dict[str, Any], Path]]:
    """The `files` entry of an artifact creation body for each file, keyed by base name."""
    described: dict[str, tuple[dict[str, Any], Path]] = {}
    for path in files:
        with open(path, "rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
            size = stream.tell()
        described[path.name] = (
            {
                "size": size,
                "checksums": {"sha256": digest},
                "type": "file",
                "content_type": DEBUG_LOG_CONTENT_TYPE,
            },
            path,
        )
    return described
