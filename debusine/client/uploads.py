"""
The resumable, verified file upload of protocol.md §2.3, client side.

For each file: probe (`Content-Range: bytes */SIZE`, empty body) to learn how many bytes the
server already holds (`Range: bytes=0-RECEIVED`), then send chunks from there. The chunk that
completes the file is answered 201 once the server has checked the SHA-256, or 409 when the
hash differs: the server then discards what it had, and the whole file is sent again (three
attempts in all). A lost connection is retried (three times, a few seconds apart) by probing
again, so an interrupted upload resumes where the server stopped receiving.

This is the one upload implementation: the `debusine` CLI, the tasks (in the worker's task
process) and the worker daemon (for debug logs, from a thread) all send files through it. It
depends only on a small `UploadTransport` (what `DebusineClient` provides), not on the client
module, so that the client can import it without a cycle.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import requests

from debusine.client.errors import (
    LocalFileError,
    ProblemError,
    ServerUnreachableError,
    UploadError,
)
from debusine.client.progress import Advance, TransferProgress
from debusine.protocol.artifacts import FileRequest

#: Bytes per PUT, as Debusine's client sends them.
DEFAULT_CHUNK_SIZE = 50 * 1024 * 1024
#: Whole-file attempts when the server finds that the SHA-256 differs.
HASH_ATTEMPTS = 3
#: Retries after a lost connection, and the pause before each.
CONNECTION_RETRIES = 3
DEFAULT_RETRY_DELAY = 5.0

_RANGE = re.compile(r"^bytes=0-(\d+)$")

#: Bytes read at a time when hashing a local file.
_HASH_BLOCK_SIZE = 4 * 1024 * 1024
#: Bytes read from the file and handed to the connection at a time while uploading.
SEND_BLOCK_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    """A file on disk to put in an artifact, with what the server is told about it."""

    path: Path
    size: int
    sha256: str
    #: Announced to the server (and given back on download); None: not said.
    content_type: str | None = None

    @classmethod
    def from_path(cls, path: Path, content_type: str | None = None) -> LocalFile:
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("rb") as contents:
                while block := contents.read(_HASH_BLOCK_SIZE):
                    digest.update(block)
                    size += len(block)
        except OSError as error:
            raise LocalFileError.from_os_error(error, path) from None
        return cls(path=path, size=size, sha256=digest.hexdigest(), content_type=content_type)

    def as_request(self) -> FileRequest:
        """The `files` entry of an artifact creation request."""
        return FileRequest(
            size=self.size,
            checksums={"sha256": self.sha256},
            type="file",
            content_type=self.content_type,
        )


class UploadTransport(Protocol):
    """What the uploader needs of a client: authenticated requests, URLs and progress bars."""

    progress: TransferProgress

    def send(
        self,
        method: str,
        path: str,
        *,
        expected: tuple[int, ...] = ...,
        data: Any = ...,
        headers: Mapping[str, str] | None = ...,
    ) -> requests.Response: ...

    def file_upload_url(self, artifact_id: int, name: str) -> str: ...


class _Slice:
    """
    `length` bytes of an open file from its current position, reporting progress.

    An iterable with a length, not a file: requests then sends Content-Length and urllib3
    hands each SEND_BLOCK_SIZE block to the socket whole, where a file-like body would be read
    and sent 16 KiB at a time.

    A read error becomes a `LocalFileError`, not an OSError: the HTTP library would take an
    OSError raised while it sends the body for a lost connection, and the upload would be
    retried against a server that did nothing wrong.
    """

    def __init__(
        self, contents: BinaryIO, length: int, advance: Advance, path: Path | None = None
    ) -> None:
        self.contents = contents
        self.path = path
        self.length = length
        self.advance = advance

    def __len__(self) -> int:  # requests sends it as Content-Length
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        remaining = self.length
        while remaining > 0:
            try:
                block = self.contents.read(min(SEND_BLOCK_SIZE, remaining))
            except OSError as error:
                raise LocalFileError.from_os_error(error, self.path or self.contents) from None
            if not block:
                raise UploadError(
                    f"{getattr(self.contents, 'name', 'the file')} is shorter than announced"
                )
            remaining -= len(block)
            yield block
            self.advance(len(block))


def received_bytes(response: requests.Response) -> int:
    """The `N` of a `Range: bytes=0-N` answer: how many bytes the server holds."""
    header = response.headers.get("Range", "")
    match = _RANGE.match(header.strip())
    if match is None:
        raise UploadError(f"{response.url}: status {response.status_code} without a valid Range")
    return int(match.group(1))


class FileUploader:
    """Uploads files of artifacts through one client."""

    def __init__(
        self,
        client: UploadTransport,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        retry_delay: float = DEFAULT_RETRY_DELAY,
    ) -> None:
        self.client = client
        self.chunk_size = chunk_size
        self.retry_delay = retry_delay
        #: What happened, for tests and `-d`: ("probe", offset) / ("chunk", start, end, status).
        self.events: list[tuple[object, ...]] = []

    def upload(self, artifact_id: int, name: str, local: LocalFile) -> None:
        url = self.client.file_upload_url(artifact_id, name)
        with self.client.progress.track(name, local.size) as advance:
            for _attempt in range(HASH_ATTEMPTS):
                if self._upload_once(url, local, advance):
                    return
        raise UploadError(
            f"{name}: the server found a different SHA-256 {HASH_ATTEMPTS} times; "
            f"is {local.path} changing while it is uploaded?"
        )

    def _upload_once(self, url: str, local: LocalFile, advance: Advance) -> bool:
        """Send the file from where the server stands; False if the hash did not match."""
        connection_failures = 0
        offset: int | None = None
        must_probe = True
        try:
            contents = local.path.open("rb")
        except OSError as error:
            raise LocalFileError.from_os_error(error, local.path) from None
        with contents:
            while True:
                try:
                    if must_probe:
                        offset = self._probe(url, local.size)
                        must_probe = False
                    if offset is None:
                        return True
                    try:
                        contents.seek(offset)
                    except OSError as error:
                        raise LocalFileError.from_os_error(error, local.path) from None
                    status, offset = self._send_chunk(url, local, contents, offset, advance)
                except ServerUnreachableError as error:
                    connection_failures += 1
                    if connection_failures > CONNECTION_RETRIES:
                        raise UploadError(f"{local.path.name}: {error}") from None
                    time.sleep(self.retry_delay)
                    must_probe = True
                    continue
                if status == 409:
                    return False

    def _probe(self, url: str, size: int) -> int | None:
        """How many bytes the server holds, or None when the file is already complete."""
        response = self.client.send(
            "PUT",
            url,
            data=b"",
            headers={"Content-Range": f"bytes */{size}"},
            expected=(200, 206),
        )
        if response.status_code == 200:
            self.events.append(("probe", None))
            return None
        offset = received_bytes(response)
        self.events.append(("probe", offset))
        return offset

    def _send_chunk(
        self, url: str, local: LocalFile, contents: BinaryIO, start: int, advance: Advance
    ) -> tuple[int, int | None]:
        """Send one chunk from `start`; return (status, next offset or None when done)."""
        if local.size == 0:
            end = -1
            body = b""
            headers = {"Content-Range": f"bytes */{local.size}"}
        else:
            end = min(start + self.chunk_size, local.size) - 1
            body_slice = _Slice(contents, end - start + 1, advance, local.path)
            headers = {"Content-Range": f"bytes {start}-{end}/{local.size}"}
        try:
            response = self.client.send(
                "PUT",
                url,
                data=body if local.size == 0 else body_slice,
                headers=headers,
                expected=(200, 201),
            )
        except ProblemError as problem:
            if problem.status == 409:
                self.events.append(("chunk", start, end, 409))
                return 409, None
            raise
        self.events.append(("chunk", start, end, response.status_code))
        if response.status_code == 201:
            return 201, None
        return 200, received_bytes(response)
