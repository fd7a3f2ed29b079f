"""
`DebusineClient`: the Python client of the Debusine REST API 1.0 (protocol.md §2, §5).

One `requests` session per client. Every API call sends `Token` and `X-Debusine-Scope`;
downloads send only `Token`, like Debusine's client. Answers are checked the way Debusine's
client checks them: a `application/problem+json` body is a ProblemError whatever the status,
any other unexpected status is a ClientError, and so is a body that does not parse.

Request bodies are built from the strict request models of `debusine.protocol` and answers
parsed with its lenient response models, so the client follows the one wire contract and
still works against Debusine servers that leave fields out.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import pydantic
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from debusine.client.errors import (
    ClientError,
    DownloadError,
    LocalFileError,
    ProblemError,
    ServerUnreachableError,
)
from debusine.client.progress import NO_PROGRESS, TransferProgress
from debusine.client.uploads import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_RETRY_DELAY,
    FileUploader,
    LocalFile,
)
from debusine.protocol.artifacts import (
    ArtifactCreateRequest,
    ArtifactRelationType,
    FileResponse,
    LenientArtifactResponse,
    RelationCreateRequest,
    RelationResponse,
)
from debusine.protocol.work_requests import (
    LenientWorkRequestPage,
    LenientWorkRequestResponse,
    ManualUnblockAction,
    WorkRequestCreateRequest,
    WorkRequestPatchRequest,
    WorkRequestUnblockRequest,
)
from debusine.protocol.workflows import (
    LenientWorkflowTemplateResponse,
    WorkflowCreateRequest,
    WorkflowTemplateCreateRequest,
)

API_VERSION = "1.0"
PROBLEM_CONTENT_TYPE = "application/problem+json"
#: Seconds to wait for the server to answer (connect, then each read).
DEFAULT_TIMEOUT = (10.0, 300.0)
#: Download buffer size.
READ_SIZE = 4 * 1024 * 1024

Model = TypeVar("Model", bound=pydantic.BaseModel)

__all__ = ["DebusineClient", "LocalFile", "describe_connection_error", "wire_body"]


def describe_connection_error(error: Exception) -> str:
    """The useful end of a requests connection error ("[Errno 111] Connection refused")."""
    text = str(error)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip().rstrip(",")
    if "timed out" in text.lower():
        return "timed out"
    return type(error).__name__


def wire_body(request: pydantic.BaseModel, *, omit_when_none: tuple[str, ...] = ()) -> Any:
    """
    The JSON body of a request model. Unset optional keys are sent as null, as Debusine
    clients send them, except those in `omit_when_none`, which are left out when None.
    """
    body = request.model_dump(mode="json")
    for key in omit_when_none:
        if body.get(key) is None:
            body.pop(key, None)
    return body


class DebusineClient:
    """A user (or worker) of one server, in one scope."""

    def __init__(
        self,
        api_url: str,
        token: str | None = None,
        scope: str | None = None,
        *,
        debug: IO[str] | None = None,
        progress: TransferProgress = NO_PROGRESS,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.scope = scope
        self.debug = debug
        self.progress = progress
        self.timeout = timeout
        #: Upload tuning (protocol defaults; tests use small chunks and no pause).
        self.upload_chunk_size = DEFAULT_CHUNK_SIZE
        self.upload_retry_delay = DEFAULT_RETRY_DELAY
        self.session = requests.Session()
        # Like Debusine's client: transient server errors are retried, over https only.
        retry = Retry(total=4, backoff_factor=0.5, status_forcelist=(429, 500, 503, 504))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))

    # --- Plumbing ----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of an API path (`work-request/1/`), or `path` if already absolute."""
        if urlsplit(path).scheme:
            return path
        return f"{self.api_url}/{API_VERSION}/{path}"

    def headers(self, *, with_scope: bool = True) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.token:
            headers["Token"] = self.token
        if with_scope and self.scope:
            headers["X-Debusine-Scope"] = self.scope
        return headers

    def send(
        self,
        method: str,
        path: str,
        *,
        expected: tuple[int, ...] = (200,),
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        with_scope: bool = True,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request; return the response if its status is `expected`, else raise."""
        url = self.url(path)
        all_headers = {**self.headers(with_scope=with_scope), **(headers or {})}
        if self.debug is not None:
            shown = {k: ("***" if k == "Token" else v) for k, v in all_headers.items()}
            print(f"> {method} {url} {params or ''} {shown}", file=self.debug)
            if json_body is not None:
                print(f">   {json_body}", file=self.debug)
        try:
            response = self.session.request(
                method,
                url,
                json=json_body,
                data=data,
                headers=all_headers,
                params=params,
                timeout=self.timeout,
                stream=stream,
            )
        except requests.ConnectionError as error:
            raise ServerUnreachableError(
                f"cannot connect to {self.api_url}: {describe_connection_error(error)}"
            ) from None
        except requests.Timeout:
            raise ServerUnreachableError(
                f"{method} {url}: the server did not answer in time"
            ) from None
        except requests.RequestException as error:
            raise ClientError(f"{method} {url}: {error}") from None
        if self.debug is not None:
            range_header = response.headers.get("Range", "")
            print(
                f"< {response.status_code} {response.headers.get('Content-Type', '')} "
                f"{range_header}",
                file=self.debug,
            )
            if not stream and response.content and len(response.content) < 4000:
                print(f"<   {response.text}", file=self.debug)
        self.check(response, expected)
        return response

    def check(self, response: requests.Response, expected: tuple[int, ...]) -> None:
        """Raise for a problem, or for a status not in `expected`."""
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == PROBLEM_CONTENT_TYPE:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.text[:200]}
            if not isinstance(problem, dict):
                problem = {"title": str(problem)}
            raise ProblemError(response.status_code, problem)
        if response.status_code in expected:
            return
        where = f"{response.request.method} {response.url}"
        if response.status_code == 404:
            explanation = "the server has no such endpoint or object"
            if content_type == "text/plain" and response.text.strip():
                explanation = response.text.strip().splitlines()[0][:200]
            raise ClientError(f"Not found: {where} ({explanation})")
        if response.status_code == 403:
            raise ClientError(f"Token is invalid or disabled: {where}")
        raise ClientError(f"unexpected status {response.status_code} from {where}")

    def parse(self, response: requests.Response, model: type[Model]) -> Model:
        try:
            return model.model_validate(response.json())
        except (ValueError, pydantic.ValidationError) as error:
            first = str(error).splitlines()[0]
            raise ClientError(
                f"{response.request.method} {response.url} did not return a valid "
                f"{model.__name__}: {first}"
            ) from None

    def parse_list(self, response: requests.Response, model: type[Model]) -> list[Model]:
        body = response.json()
        if not isinstance(body, list):
            raise ClientError(f"{response.url} did not return a list")
        try:
            return [model.model_validate(item) for item in body]
        except pydantic.ValidationError as error:
            raise ClientError(
                f"{response.url} did not return valid {model.__name__} objects: "
                f"{str(error).splitlines()[0]}"
            ) from None

    # --- Work requests -----------------------------------------------------------------------

    def work_request_iter(
        self, limit: int | None = None, filters: dict[str, str] | None = None
    ) -> Iterator[LenientWorkRequestResponse]:
        """
        Visible work requests, newest first, following the pages' `next` links. `filters`
        (our server's): `task_type`, `root_only` ("true"), `parent` (a workflow's id).
        """
        url: str | None = "work-request/" + (f"?{urlencode(filters)}" if filters else "")
        count = 0
        while url is not None:
            page = self.parse(self.send("GET", url), LenientWorkRequestPage)
            for item in page.results:
                if limit is not None and count >= limit:
                    return
                yield item
                count += 1
            url = page.next

    def work_request_get(self, work_request_id: int) -> LenientWorkRequestResponse:
        response = self.send("GET", f"work-request/{work_request_id}/")
        return self.parse(response, LenientWorkRequestResponse)

    def work_request_live_log(
        self, work_request_id: int, after: int = 0
    ) -> tuple[list[dict[str, Any]], int, str]:
        """
        Frames of the work request's live log from position `after`: (frames, next position,
        the work request's status). Only servers of ours have it (404 elsewhere).
        """
        response = self.send(
            "GET", f"work-request/{work_request_id}/live-log/", params={"after": str(after)}
        )
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("frames"), list):
            raise ClientError(f"work request {work_request_id}: the live log is not a page")
        return body["frames"], int(body.get("next", after)), str(body.get("status", ""))

    def work_request_create(
        self,
        task_name: str,
        task_data: dict[str, Any],
        *,
        workspace: str | None = None,
        event_reactions: dict[str, Any] | None = None,
    ) -> LenientWorkRequestResponse:
        request = WorkRequestCreateRequest(
            task_name=task_name,
            task_data=task_data,
            # Debusine clients send `{}` when there are none.
            event_reactions=event_reactions or {},
            workspace=workspace,
        )
        body = wire_body(request, omit_when_none=("workspace",))
        response = self.send("POST", "work-request/", json_body=body)
        return self.parse(response, LenientWorkRequestResponse)

    def work_request_set_priority_adjustment(
        self, work_request_id: int, adjustment: int
    ) -> LenientWorkRequestResponse:
        request = WorkRequestPatchRequest(priority_adjustment=adjustment)
        response = self.send(
            "PATCH", f"work-request/{work_request_id}/", json_body=wire_body(request)
        )
        return self.parse(response, LenientWorkRequestResponse)

    def work_request_retry(self, work_request_id: int) -> LenientWorkRequestResponse:
        response = self.send("POST", f"work-request/{work_request_id}/retry/", json_body={})
        return self.parse(response, LenientWorkRequestResponse)

    def work_request_abort(self, work_request_id: int) -> LenientWorkRequestResponse:
        response = self.send("POST", f"work-request/{work_request_id}/abort/", json_body={})
        return self.parse(response, LenientWorkRequestResponse)

    def work_request_unblock(
        self,
        work_request_id: int,
        *,
        notes: str | None = None,
        action: ManualUnblockAction | None = None,
    ) -> LenientWorkRequestResponse:
        """Review a manual-unblock work request: notes, accept or reject (at least one)."""
        request = WorkRequestUnblockRequest(notes=notes, action=action)
        response = self.send(
            "POST",
            f"work-request/{work_request_id}/unblock/",
            json_body=wire_body(request, omit_when_none=("notes", "action")),
        )
        return self.parse(response, LenientWorkRequestResponse)

    # --- Workflows ---------------------------------------------------------------------------

    def workflow_template_create(
        self,
        name: str,
        task_name: str,
        task_data: dict[str, Any],
        *,
        priority: int = 0,
        workspace: str | None = None,
    ) -> LenientWorkflowTemplateResponse:
        request = WorkflowTemplateCreateRequest(
            name=name,
            task_name=task_name,
            task_data=task_data,
            priority=priority,
            workspace=workspace,
        )
        body = wire_body(request, omit_when_none=("workspace",))
        response = self.send("POST", "workflow-template/", json_body=body, expected=(201,))
        return self.parse(response, LenientWorkflowTemplateResponse)

    def workflow_create(
        self, template_name: str, task_data: dict[str, Any], *, workspace: str | None = None
    ) -> LenientWorkRequestResponse:
        request = WorkflowCreateRequest(
            template_name=template_name, task_data=task_data, workspace=workspace
        )
        body = wire_body(request, omit_when_none=("workspace", "task_name"))
        response = self.send("POST", "workflow/", json_body=body, expected=(201,))
        return self.parse(response, LenientWorkRequestResponse)

    # --- Artifacts ---------------------------------------------------------------------------

    def artifact_create(
        self,
        category: str,
        files: Mapping[str, LocalFile],
        data: dict[str, Any],
        *,
        workspace: str | None = None,
        expire_at: datetime | None = None,
        work_request: int | None = None,
    ) -> LenientArtifactResponse:
        """Create the artifact (no file contents yet: see `upload_artifact_files`)."""
        request = ArtifactCreateRequest(
            category=category,
            files={name: local.as_request() for name, local in sorted(files.items())},
            data=data,
            work_request=work_request,
            expire_at=expire_at,
            workspace=workspace,
        )
        # Debusine clients never send `expiration_delay`.
        body = wire_body(request, omit_when_none=("workspace", "expiration_delay"))
        response = self.send("POST", "artifact/", json_body=body, expected=(201,))
        return self.parse(response, LenientArtifactResponse)

    def upload_artifact_files(
        self, artifact: LenientArtifactResponse, files: Mapping[str, LocalFile]
    ) -> int:
        """Upload what the server still lacks; return how many files were uploaded."""
        uploader = FileUploader(
            self, chunk_size=self.upload_chunk_size, retry_delay=self.upload_retry_delay
        )
        for name in artifact.files_to_upload:
            if name not in files:
                raise ClientError(f"the server asks for {name!r}, which was not offered")
            uploader.upload(artifact.id, name, files[name])
        return len(artifact.files_to_upload)

    def artifact_get(self, artifact_id: int) -> LenientArtifactResponse:
        return self.parse(self.send("GET", f"artifact/{artifact_id}/"), LenientArtifactResponse)

    def file_upload_url(self, artifact_id: int, name: str) -> str:
        return self.url(f"artifact/{artifact_id}/files/{quote(name, safe='/')}/")

    def relation_create(self, artifact: int, target: int, relation_type: str) -> RelationResponse:
        request = RelationCreateRequest(
            artifact=artifact, target=target, type=ArtifactRelationType(relation_type)
        )
        response = self.send(
            "POST", "artifact-relation/", json_body=wire_body(request), expected=(200, 201)
        )
        return self.parse(response, RelationResponse)

    def relation_list(self, artifact_id: int, *, reverse: bool = False) -> list[RelationResponse]:
        key = "target_artifact" if reverse else "artifact"
        response = self.send("GET", "artifact-relation/", params={key: str(artifact_id)})
        return self.parse_list(response, RelationResponse)

    def download_file(self, name: str, file: FileResponse, destination: Path) -> None:
        """Download one file to `destination`, checking its size and SHA-256."""
        expected_sha256 = file.checksums.get("sha256")
        digest = hashlib.sha256()
        size = self._download(file.url, destination, name, file.size, digest)
        if size != file.size:
            raise DownloadError(f"{name}: received {size} bytes, the artifact lists {file.size}")
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256.lower():
            destination.unlink(missing_ok=True)
            raise DownloadError(
                f"{name}: SHA-256 {digest.hexdigest()} differs from the artifact's "
                f"{expected_sha256}"
            )

    def download_tarball(self, artifact: LenientArtifactResponse, destination: Path) -> int:
        """Save the gzip tar of every file of the artifact; return its size."""
        return self._download(
            artifact.download_tar_gz_url,
            destination,
            destination.name,
            None,
            hashlib.sha256(),
        )

    def _download(
        self,
        url: str,
        destination: Path,
        description: str,
        total: int | None,
        digest: Any,
    ) -> int:
        response = self.send("GET", url, with_scope=False, stream=True)
        partial = destination.with_name(destination.name + ".part")
        size = 0
        try:
            with (
                response,
                partial.open("wb") as output,
                self.progress.track(description, total or 0) as advance,
            ):
                for block in response.iter_content(READ_SIZE):
                    output.write(block)
                    digest.update(block)
                    size += len(block)
                    advance(len(block))
        except requests.RequestException as error:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"downloading {description} failed: {describe_connection_error(error)}"
            ) from None
        except OSError as error:
            # Not the network (requests' errors are OSErrors too, handled above): the local
            # side, e.g. a full disk or a directory where the file should go.
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise LocalFileError.from_os_error(error, partial, "write") from None
        try:
            partial.replace(destination)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise LocalFileError.from_os_error(error, destination, "write") from None
        return size

    # --- Websocket ---------------------------------------------------------------------------

    def websocket_url(self, path: str) -> str:
        """`ws://`/`wss://` URL of a websocket path (`work-request/on-completed/`)."""
        return self.api_url.replace("http", "ws", 1) + f"/ws/{API_VERSION}/{path}"
