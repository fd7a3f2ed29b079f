"""
Web views that download artifact contents: one file (with HTTP ranges), or a whole artifact
as a streamed tar.gz.

These URLs live outside `/api/` (`/{scope}/{workspace}/artifact/{id}/download/...`): the
artifact serializer hands them to clients as `files[].url` and `download_tar_gz_url`. Callers
authenticate with the same `Token` header as the API, or not at all for public workspaces;
a private workspace is a 404 to outsiders. File paths are only ever looked up in the database,
never joined onto a filesystem path, so no path can escape a store.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import re
import tarfile
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header

from debusine.server.api.auth import (
    ConflictingTokenError,
    TokenRefusedError,
    authenticate_token,
)
from debusine.server.db.models import Artifact, File, FileInArtifact, FileStore, User
from debusine.server.file_stores import FileBackend, FileStoreError, get_backend
from debusine.server.file_stores.base import entry_name
from debusine.server.file_stores.local import LocalBackend
from debusine.server.file_stores.policies import download_store, download_stores
from debusine.server.work_requests.worker_tokens import WorkerCaller

logger = logging.getLogger(__name__)

#: Size of the pieces a download is read and sent in (see also the ASGI handler's).
STREAM_CHUNK_SIZE = 4 * 1024 * 1024

#: gzip level of artifact tarballs: zlib's default, a fair trade of size against speed on
#: contents that are often already compressed (.deb, .tar.xz).
TAR_GZ_LEVEL = 6

BYTE_RANGE_RE = re.compile(r"^(?P<start>[0-9]*)-(?P<end>[0-9]*)$")

RANGE_NOT_SATISFIABLE = 416


class UnsatisfiableRangeError(Exception):
    """A `Range` header this file cannot satisfy (answered with 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """
    The (offset, length) a `Range` header asks for, or None to send the whole file.

    Only one byte range is served; other units and multiple ranges get the whole file, as
    HTTP allows.
    """
    if not header:
        return None
    unit, _, ranges = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in ranges:
        return None
    match = BYTE_RANGE_RE.match(ranges.strip())
    if match is None or (not match["start"] and not match["end"]):
        raise UnsatisfiableRangeError(header)
    if not match["start"]:
        suffix = int(match["end"])
        if suffix == 0 or size == 0:
            raise UnsatisfiableRangeError(header)
        length = min(suffix, size)
        return size - length, length
    start = int(match["start"])
    end = int(match["end"]) if match["end"] else size - 1
    if start >= size or end < start:
        raise UnsatisfiableRangeError(header)
    end = min(end, size - 1)
    return start, end - start + 1


def read_chunks(open_reader: Callable[[], io.BufferedIOBase]) -> Iterator[bytes]:
    """Read a file in STREAM_CHUNK_SIZE pieces, opening it only when iteration starts."""
    with open_reader() as reader:
        while chunk := reader.read(STREAM_CHUNK_SIZE):
            yield chunk


async def in_worker_threads(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Serve a blocking iterator under ASGI one piece at a time, each read in a thread."""
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


def streaming_response(
    request: HttpRequest, chunks: Iterator[bytes], **kwargs: object
) -> StreamingHttpResponse:
    """
    Stream `chunks` without ever holding the whole body in memory.

    Under ASGI Django turns a plain iterator into a list before sending it, so there the
    chunks are served through an async iterator instead.
    """
    content: Iterator[bytes] | AsyncIterator[bytes] = chunks
    if isinstance(request, ASGIRequest):
        content = in_worker_threads(chunks)
    return StreamingHttpResponse(content, **kwargs)


class RefusedTokenResponse(Exception):  # noqa: N818 (not an error: an early answer)
    """A token that is not valid: the download views answer a plain 403 saying why."""

    def __init__(self, error: TokenRefusedError) -> None:
        super().__init__(error.title)
        self.response = HttpResponseForbidden(
            f"{error.title}: {error.detail}\n", content_type="text/plain"
        )


def refusing_invalid_tokens(
    view: Callable[..., HttpResponseBase],
) -> Callable[..., HttpResponseBase]:
    """
    Answer a refused token with its 403 instead of raising it, so that the request's
    transaction commits what the refusal recorded (the token's last_seen_at).
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return view(request, *args, **kwargs)
        except RefusedTokenResponse as refusal:
            return refusal.response

    return wrapper


@dataclass(frozen=True)
class Viewer:
    """Who is downloading: a user (maybe anonymous), or a worker (who may read everything)."""

    user: User | AnonymousUser
    is_worker: bool = False


def request_viewer(request: HttpRequest) -> Viewer:
    """
    The viewer, authenticated by the `Token` header as on the API.

    Without a usable token, the user of the request's session (or an anonymous one).
    """
    try:
        authenticated = authenticate_token(request)
    except ConflictingTokenError as error:
        raise PermissionDenied(str(error)) from None
    except TokenRefusedError as error:
        raise RefusedTokenResponse(error) from None
    if authenticated is None:
        user = getattr(request, "user", None)
        return Viewer(user if isinstance(user, User) else AnonymousUser())
    user, credential = authenticated
    return Viewer(user, is_worker=isinstance(credential, WorkerCaller))


def visible_artifact(
    request: HttpRequest, scope_name: str, workspace_name: str, artifact_id: int
) -> Artifact:
    """The artifact named by the URL, if it is in that workspace and the caller may see it."""
    artifact = (
        Artifact.objects.select_related("workspace__scope")
        .filter(pk=artifact_id, workspace__name=workspace_name, workspace__scope__name=scope_name)
        .first()
    )
    if artifact is None:
        raise Http404("No such artifact")
    viewer = request_viewer(request)
    if not viewer.is_worker and not artifact.workspace.can_display(viewer.user):
        raise Http404("No such artifact")
    return artifact


def contents_missing(artifact: Artifact, file_in_artifact: FileInArtifact) -> Http404:
    """A complete file whose contents no readable store holds: an operator must look."""
    logger.error(
        "Artifact %s: contents of %r (%s) are in no readable store of scope %s",
        artifact.pk,
        file_in_artifact.path,
        file_in_artifact.file,
        artifact.workspace.scope.name,
    )
    return Http404("File contents are not available")


def download_file(
    request: HttpRequest,
    artifact: Artifact,
    file_in_artifact: FileInArtifact,
    store: FileStore | None,
) -> HttpResponseBase:
    """Send one complete file of `artifact` (or the part asked for by `Range`)."""
    file = file_in_artifact.file
    try:
        requested = parse_range(request.headers.get("Range"), file.size)
    except UnsatisfiableRangeError:
        return HttpResponse(
            status=RANGE_NOT_SATISFIABLE, headers={"Content-Range": f"bytes */{file.size}"}
        )
    offset, length = requested if requested is not None else (0, file.size)
    chunks: Iterator[bytes] = iter(())
    if length:
        if store is None:
            raise contents_missing(artifact, file_in_artifact)
        backend = get_backend(store)
        if (url := backend.redirect_url(file)) is not None:
            return HttpResponseRedirect(url)
        if (accel := accel_redirect(backend, file)) is not None:
            if not backend.has_contents(file):
                raise contents_missing(artifact, file_in_artifact)
            return accel_response(accel, file_in_artifact)
        try:
            # Opened now rather than when streaming starts: missing contents are still a 404.
            reader = backend.open_contents(file, offset, length)
        except FileStoreError:
            raise contents_missing(artifact, file_in_artifact) from None
        chunks = read_chunks(lambda: reader)
    response = streaming_response(
        request,
        chunks,
        status=206 if requested is not None else 200,
        content_type=file_in_artifact.content_type or "application/octet-stream",
    )
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=PurePosixPath(file_in_artifact.path).name
    )
    if requested is not None:
        response["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{file.size}"
    return response


def accel_redirect(backend: FileBackend, file: File) -> str | None:
    """
    The internal nginx URI of `file` when nginx sends local-store downloads
    (DEBUSINE_X_ACCEL_REDIRECT_LOCATION set, `backend` a local store), else None.
    """
    location = str(settings.DEBUSINE_X_ACCEL_REDIRECT_LOCATION).rstrip("/")
    if not location or not isinstance(backend, LocalBackend):
        return None
    return f"{location}/{quote(backend.store.name, safe='')}/{entry_name(file)}"


def accel_response(uri: str, file_in_artifact: FileInArtifact) -> HttpResponse:
    """
    An empty answer telling nginx to send `uri` (an `internal` location) in its place: nginx
    keeps these headers, sets the length and serves any `Range` itself.
    """
    response = HttpResponse(
        content_type=file_in_artifact.content_type or "application/octet-stream"
    )
    response["X-Accel-Redirect"] = uri
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=PurePosixPath(file_in_artifact.path).name
    )
    # (Our Content-Length, 0, is dropped by nginx with the rest of this empty body.)
    return response


class GzipBuffer:
    """Compress to gzip, handing out output in pieces of about STREAM_CHUNK_SIZE."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(TAR_GZ_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self._pending = bytearray()
        self.uncompressed_size = 0

    def write(self, data: bytes) -> bytes | None:
        """Compress `data`; return compressed output once enough has accumulated."""
        self.uncompressed_size += len(data)
        self._pending += self._compressor.compress(data)
        if len(self._pending) < STREAM_CHUNK_SIZE:
            return None
        out = bytes(self._pending)
        self._pending.clear()
        return out

    def finish(self) -> bytes:
        return bytes(self._pending + self._compressor.flush())


@dataclass(frozen=True)
class TarMember:
    """A file to put in a tarball, with a way to open its contents."""

    info: tarfile.TarInfo
    open_reader: Callable[[], io.BufferedIOBase] | None


def tar_gz_chunks(members: list[TarMember]) -> Iterator[bytes]:
    """A gzip-compressed ustar/pax stream of `members`, produced piece by piece."""
    gzip = GzipBuffer()
    for member in members:
        header = member.info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if out := gzip.write(header):
            yield out
        if member.open_reader is not None:
            remaining = member.info.size
            for chunk in read_chunks(member.open_reader):
                remaining -= len(chunk)
                if out := gzip.write(chunk):
                    yield out
            if remaining != 0:
                # Never send a tarball with a short member: it would silently corrupt files.
                raise OSError(f"{member.info.name}: store contents have the wrong size")
        if padding := -member.info.size % tarfile.BLOCKSIZE:
            gzip.write(tarfile.NUL * padding)
    # End of archive: two zero blocks, then zeros up to a whole record, as tar writes them.
    gzip.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
    if padding := -gzip.uncompressed_size % tarfile.RECORDSIZE:
        gzip.write(tarfile.NUL * padding)
    yield gzip.finish()


def download_tar_gz(
    request: HttpRequest,
    artifact: Artifact,
    files: list[FileInArtifact],
    stores: dict[int, FileStore],
) -> StreamingHttpResponse:
    """Send every complete file of `artifact` at its path, as a streamed tar.gz."""
    mtime = int(artifact.created_at.timestamp())
    members: list[TarMember] = []
    for file_in_artifact in files:
        if not file_in_artifact.complete:
            continue
        file = file_in_artifact.file
        info = tarfile.TarInfo(file_in_artifact.path)
        info.size = file.size
        info.mtime = mtime
        info.mode = 0o644
        opener: Callable[[], io.BufferedIOBase] | None = None
        if file.size:
            store = stores.get(file.pk)
            if store is None:
                raise contents_missing(artifact, file_in_artifact)
            opener = _opener(get_backend(store), file)
        members.append(TarMember(info, opener))
    response = streaming_response(
        request, tar_gz_chunks(members), content_type="application/octet-stream"
    )
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=f"artifact-{artifact.pk}.tar.gz"
    )
    return response


def _opener(backend: FileBackend, file: File) -> Callable[[], io.BufferedIOBase]:
    """Open the whole contents of `file` when called (binds the loop's current values)."""
    return lambda: backend.open_contents(file)


def artifact_files(artifact: Artifact) -> tuple[list[FileInArtifact], dict[int, FileStore]]:
    """The artifact's files by path, and the store each complete file is read from."""
    files = list(
        FileInArtifact.objects.filter(artifact=artifact).select_related("file").order_by("path")
    )
    complete = [item.file for item in files if item.complete and item.file.size]
    return files, download_stores(artifact.workspace.scope, complete)


@refusing_invalid_tokens
def download_artifact_file(
    request: HttpRequest, scope: str, workspace: str, artifact_id: int, path: str
) -> HttpResponseBase:
    """`GET /{scope}/{workspace}/artifact/{id}/download/{path}`: one file."""
    artifact = visible_artifact(request, scope, workspace, artifact_id)
    file_in_artifact = (
        FileInArtifact.objects.select_related("file")
        .filter(artifact=artifact, path=path, complete=True)
        .first()
    )
    if file_in_artifact is None:
        raise Http404("No such file in this artifact, or not uploaded yet")
    store = download_store(artifact.workspace.scope, file_in_artifact.file)
    return download_file(request, artifact, file_in_artifact, store)


@refusing_invalid_tokens
def download_artifact(
    request: HttpRequest, scope: str, workspace: str, artifact_id: int
) -> HttpResponseBase:
    """`GET /{scope}/{workspace}/artifact/{id}/download/`: the tarball (or the only file)."""
    artifact = visible_artifact(request, scope, workspace, artifact_id)
    archive = request.GET.get("archive")
    if archive not in (None, "tar.gz"):
        return HttpResponseBadRequest(
            f"Unsupported archive format {archive!r}: only tar.gz", content_type="text/plain"
        )
    files, stores = artifact_files(artifact)
    if archive is None and len(files) == 1:
        only = files[0]
        if not only.complete:
            raise Http404("The artifact's file is not uploaded yet")
        return download_file(request, artifact, only, stores.get(only.file.pk))
    return download_tar_gz(request, artifact, files, stores)
