"""
API view: `PUT /api/1.0/artifact/<id>/files/<path>/`, the resumable, verified file upload.

The client first probes (`Content-Range: bytes */SIZE`, empty body) and learns from the
`Range: bytes=0-R` reply how many bytes the server already holds, then sends chunks
(`Content-Range: bytes START-END/SIZE`). The chunk that brings the partial upload to SIZE
bytes triggers verification: the SHA-256 must match the file declared at artifact creation,
and only then do the contents move into the scope's upload store. A PUT without
`Content-Range` carries the whole file.

Partial uploads live under DEBUSINE_UPLOAD_DIRECTORY (a `FileUpload` row names each one),
never in a store. Bytes make one pass: under the ASGI server the body is read straight from
the connection (`streamed_body`, no spooling by Django), written with `pwrite` and hashed on
the way; the SHA-256 state (`resumable_sha256`) is saved in the `FileUpload` row after every
request, so the next chunk, even in another server process or after an interruption, goes on
from it, and the final check never reads the file again.

The view holds no database transaction while it streams a body to disk: an `flock` on the
partial file serializes concurrent requests for the same file, and the final step that marks
the file complete is one short transaction.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from debusine.server.api import resumable_sha256
from debusine.server.api.auth import IsUserOrWorker, request_worker
from debusine.server.api.errors import ProblemError
from debusine.server.api.resumable_sha256 import ResumableSha256
from debusine.server.api.streamed_body import ClientDisconnectedError, streamed_body
from debusine.server.db.models import Artifact, FileInArtifact, FileUpload
from debusine.server.file_stores import FileStoreError, get_backend
from debusine.server.file_stores.base import FileStoreUnavailableError
from debusine.server.file_stores.policies import (
    NoUploadStoreError,
    download_store,
    upload_store,
)
from debusine.server.metrics import events as metrics_events

#: How much of a request body Django read is written at a time, and of a partial upload
#: hashed at a time when its saved hash state does not cover it.
COPY_CHUNK_SIZE = 4 * 1024 * 1024

#: errno values that mean "no space left": the filesystem, or the server user's quota.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def insufficient_storage(what: str, error: OSError) -> ProblemError:
    """The 507 problem of a full disk: retriable once space is freed; nothing half-written."""
    return ProblemError(
        "Insufficient storage",
        f"{what} is full ({error.strerror}); nothing of this request was kept, try again later",
        status_code=status.HTTP_507_INSUFFICIENT_STORAGE,
    )


logger = logging.getLogger(__name__)

#: Seconds a client is asked to wait before retrying when a file store is unavailable.
STORE_RETRY_AFTER = 30


def store_unavailable(store_name: str, error: FileStoreError) -> ProblemError:
    """
    The 503 problem of a store that failed to take a verified file (down, slow, refusing):
    nothing changed, the verified upload waits, and a probe later completes it.
    """
    if isinstance(error, FileStoreUnavailableError):
        logger.warning("Upload into file store %r failed (retriable): %s", store_name, error)
    else:
        logger.error("Upload into file store %r failed: %s", store_name, error)
    return ProblemError(
        "File store unavailable",
        f"The file store {store_name!r} could not take the file ({error}); the verified "
        "upload is kept: probe or send the last chunk again later",
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(STORE_RETRY_AFTER)},
    )


#: How often a request tries again to lock a partial upload that concurrent requests keep
#: completing or discarding under it.
LOCK_ATTEMPTS = 3

CONTENT_RANGE_RE = re.compile(
    r"^bytes\s+(?:\*|(?P<start>[0-9]+)-(?P<end>[0-9]+))/(?P<size>[0-9]+)$"
)


@dataclass(frozen=True)
class RequestedRange:
    """What a PUT announces: a probe, or the bytes `start`..`end` (inclusive) of `size`."""

    probe: bool
    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_content_range(header: str | None, file_size: int) -> RequestedRange:
    """Parse `Content-Range` (absent: the whole file) and check it against the file's size."""
    if header is None:
        return RequestedRange(probe=False, start=0, end=file_size - 1, size=file_size)
    match = CONTENT_RANGE_RE.match(header.strip())
    if match is None:
        raise ProblemError(
            "Invalid Content-Range header",
            f"Expected 'bytes */SIZE' or 'bytes START-END/SIZE', got {header!r}",
        )
    size = int(match["size"])
    if size != file_size:
        raise ProblemError(
            "Invalid file size in Content-Range header",
            f"The artifact declares this file as {file_size} bytes, not {size}",
        )
    if match["start"] is None:
        return RequestedRange(probe=True, start=0, end=-1, size=size)
    start, end = int(match["start"]), int(match["end"])
    if start > size:
        raise ProblemError(
            "Invalid Content-Range header", f"Range start {start} is beyond the file size {size}"
        )
    if end < start:
        raise ProblemError(
            "Invalid Content-Range header", f"Range end {end} is before its start {start}"
        )
    if end >= size:
        raise ProblemError(
            "Invalid Content-Range header",
            f"Range end {end} is beyond the last byte of a {size}-byte file",
        )
    return RequestedRange(probe=False, start=start, end=end, size=size)


def upload_directory() -> Path:
    return Path(settings.DEBUSINE_UPLOAD_DIRECTORY)


def received_so_far(file_in_artifact: FileInArtifact) -> tuple[FileUpload | None, int]:
    """
    The partial upload of a file, if any, and the bytes it holds.

    Read without taking the lock: a hint, checked again under the lock before writing.
    """
    upload = FileUpload.objects.filter(file_in_artifact=file_in_artifact).first()
    if upload is None:
        return None, 0
    try:
        return upload, (upload_directory() / upload.path).stat().st_size
    except FileNotFoundError:
        return upload, 0


@dataclass
class PartialUpload:
    """A partial upload locked by this request: its row, its path and its open file."""

    upload: FileUpload
    path: Path
    handle: BinaryIO

    @property
    def received(self) -> int:
        return os.fstat(self.handle.fileno()).st_size

    def discard(self) -> None:
        """Forget the bytes received so far."""
        FileUpload.objects.filter(pk=self.upload.pk).delete()
        self.path.unlink(missing_ok=True)


def _is_current(upload: FileUpload, path: Path, handle: IO[bytes]) -> bool:
    """
    Whether the locked file is still the live partial upload of its row (whose saved hash
    state, read by the same query, `upload` then holds).
    """
    saved = (
        FileUpload.objects.filter(pk=upload.pk, path=upload.path)
        .values_list("hashed_size", "sha256_state")
        .first()
    )
    if saved is None:
        return False
    upload.hashed_size, upload.sha256_state = saved
    try:
        return path.stat().st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


@contextmanager
def locked_partial_upload(
    file_in_artifact: FileInArtifact, known: FileUpload | None = None
) -> Iterator[PartialUpload | None]:
    """
    Lock the partial upload of a file (created when missing) for the duration of the block.

    `known` is the upload row the caller already read, if any. Yields None when the file
    became complete meanwhile: a concurrent request finished it.
    """
    directory = upload_directory()
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(LOCK_ATTEMPTS):
        upload = known
        known = None
        if upload is None:
            upload, _ = FileUpload.objects.get_or_create(
                file_in_artifact=file_in_artifact,
                defaults={"path": f"{file_in_artifact.pk}-{secrets.token_hex(8)}"},
            )
        partial_path = directory / upload.path
        # Readable by the group too: in a packaged server the uploads directory gives its files
        # the group of nginx, which sends them once they are in the local store (X-Accel).
        handle = os.fdopen(os.open(partial_path, os.O_RDWR | os.O_CREAT, 0o640), "r+b")
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            if _is_current(upload, partial_path, handle):
                yield PartialUpload(upload=upload, path=partial_path, handle=handle)
                return
            # Completed or discarded while we waited for the lock. If our open() created a
            # fresh file at the old path, nobody else owns it.
            if not FileUpload.objects.filter(path=upload.path).exists():
                try:
                    if partial_path.stat().st_ino == os.fstat(handle.fileno()).st_ino:
                        partial_path.unlink()
                except FileNotFoundError:
                    pass
        file_in_artifact.refresh_from_db(fields=["complete"])
        if file_in_artifact.complete:
            yield None
            return
    raise ProblemError(
        "Upload busy",
        "Concurrent requests keep changing this upload; try again",
        status_code=status.HTTP_409_CONFLICT,
    )


class BodyReader(Protocol):
    """Where a request body comes from: a `StreamedBody`, or `RequestBody` around Django's."""

    def read_batch(self) -> bytes | memoryview: ...


class RequestBody:
    """The body Django read (tests, WSGI), in COPY_CHUNK_SIZE batches."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request

    def read_batch(self) -> bytes:
        return self.request.read(COPY_CHUNK_SIZE)


def body_reader(request: HttpRequest) -> BodyReader:
    """The request's body, streamed from the connection when the server streams it."""
    return streamed_body(request) or RequestBody(request)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _hash_file_range(hasher: ResumableSha256, fd: int, start: int, end: int) -> None:
    """Hash bytes `start`..`end` (exclusive) of the open file `fd`."""
    offset = start
    while offset < end:
        block = os.pread(fd, min(COPY_CHUNK_SIZE, end - offset), offset)
        if not block:
            raise OSError(f"the partial upload ended at {offset} bytes, before {end}")
        hasher.update(block)
        offset += len(block)


def resumed_hash(partial: PartialUpload, offset: int) -> ResumableSha256:
    """
    The SHA-256 of the partial upload's first `offset` bytes: its saved state, caught up with
    the bytes on disk it does not cover (none, unless a request died before saving it).
    """
    upload = partial.upload  # its state as read under the lock (see `_is_current`)
    hasher: ResumableSha256 | None = None
    hashed = 0
    if upload.sha256_state is not None and upload.hashed_size <= offset:
        try:
            hasher = ResumableSha256.from_state(bytes(upload.sha256_state))
            hashed = upload.hashed_size
        except ValueError:
            hasher = None
    if hasher is None:
        hasher = ResumableSha256()
        hashed = 0
    _hash_file_range(hasher, partial.handle.fileno(), hashed, offset)
    return hasher


def save_hash(partial: PartialUpload, hasher: ResumableSha256 | None, hashed_size: int) -> None:
    """Record the hash state (None: forget it) with the upload's activity."""
    upload = partial.upload
    upload.hashed_size = hashed_size if hasher is not None else 0
    upload.sha256_state = hasher.state() if hasher is not None else None
    FileUpload.objects.filter(pk=upload.pk).update(
        last_activity_at=timezone.now(),
        hashed_size=upload.hashed_size,
        sha256_state=upload.sha256_state,
    )


def write_body(partial: PartialUpload, body: BodyReader, requested: RequestedRange) -> None:
    """
    Write the request body at `requested.start`, refusing more than `requested.length` bytes,
    hashing it on the way: the SHA-256 state of the file up to what was written is saved with
    the upload (also when the client goes away mid-body), so that completing the file never
    reads it again.
    """
    received_before = partial.received
    fd = partial.handle.fileno()
    hasher = resumed_hash(partial, requested.start) if resumable_sha256.available() else None
    written = 0

    def undo() -> None:
        """Forget what this request added to the file: it holds what it held before."""
        if partial.received > received_before:
            os.ftruncate(fd, received_before)

    try:
        while batch := body.read_batch():
            if written + len(batch) > requested.length:
                # A longer body than announced: undo what extended the file, refuse the
                # request. What it overwrote is no longer what the hash state covers.
                undo()
                hasher = None
                raise ProblemError(
                    "Request body longer than the Content-Range",
                    f"The range announces {requested.length} bytes",
                )
            try:
                # Unbuffered writes at explicit offsets: a failed write leaves nothing in a
                # buffer that closing the file would try (and fail) to write again.
                _pwrite_all(fd, batch, requested.start + written)
            except OSError as error:
                if error.errno not in NO_SPACE_ERRNOS:
                    raise
                undo()
                hasher = None
                raise insufficient_storage("The server's upload directory", error) from None
            if hasher is not None:
                hasher.update(batch)
            written += len(batch)
    finally:
        save_hash(partial, hasher, requested.start + written)
    metrics_events.bytes_uploaded(written)


def file_sha256(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def upload_sha256(partial: PartialUpload) -> bytes:
    """The SHA-256 of a fully received upload: from its saved state where there is one."""
    if not resumable_sha256.available():
        return file_sha256(partial.path)
    return resumed_hash(partial, partial.received).digest()


def complete_upload(file_in_artifact: FileInArtifact, partial: PartialUpload) -> None:
    """
    Verify a fully received upload, then put it in a store and mark the file complete.

    On a hash mismatch the partial upload is discarded and a 409 problem raised.
    """
    file = file_in_artifact.file
    digest = upload_sha256(partial)
    if digest != bytes(file.sha256):
        partial.discard()
        raise ProblemError(
            "SHA-256 mismatch",
            f"Expected {file.hash_hex}, received contents with {digest.hex()}; "
            "the upload was discarded, send the file again",
            status_code=status.HTTP_409_CONFLICT,
        )
    scope = file_in_artifact.artifact.workspace.scope
    backend = None
    # Contents already readable in the scope (uploaded to another workspace) are not stored
    # twice; the client still had to send every byte to prove it has them.
    if download_store(scope, file) is None:
        try:
            store = upload_store(scope, file.size)
        except NoUploadStoreError as error:
            raise ProblemError(
                "No file store can hold this file",
                str(error),
                status_code=status.HTTP_507_INSUFFICIENT_STORAGE,
            ) from error
        backend = get_backend(store)
        # Outside the transaction: a rename and fsync for Local, longer for remote stores.
        try:
            backend.put_contents(file, partial.path, move=True)
        except OSError as error:
            if error.errno not in NO_SPACE_ERRNOS:
                raise
            # The store removed its own half-written copy; the verified upload stays where it
            # is, so a probe completes it once the store has room again.
            raise insufficient_storage(f"The file store {store.name!r}", error) from None
        except FileStoreError as error:
            raise store_unavailable(store.name, error) from None
    with transaction.atomic():
        locked = FileInArtifact.objects.select_for_update().get(pk=file_in_artifact.pk)
        if backend is not None:
            backend.record(file)
        locked.complete = True
        locked.save(update_fields=["complete"])
        FileUpload.objects.filter(pk=partial.upload.pk).delete()
    partial.path.unlink(missing_ok=True)
    file_in_artifact.complete = True


def range_response(status_code: int, received: int) -> HttpResponse:
    """An empty reply telling the client how many bytes the server holds (`bytes=0-R`)."""
    return HttpResponse(status=status_code, headers={"Range": f"bytes=0-{received}"})


def check_chunk_size(request: HttpRequest) -> None:
    """413 for a request body over DEBUSINE_MAX_UPLOAD_CHUNK_SIZE, before anything is read."""
    limit: int = settings.DEBUSINE_MAX_UPLOAD_CHUNK_SIZE
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if limit > 0 and declared.isdigit() and int(declared) > limit:
        raise ProblemError(
            "Upload chunk too large",
            f"The request body has {declared} bytes; upload requests may have at most {limit} "
            "(DEBUSINE_MAX_UPLOAD_CHUNK_SIZE): send the file in smaller chunks.",
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )


class UploadFileView(APIView):
    """Receive the contents of one file of an artifact, possibly in several requests."""

    permission_classes = [IsUserOrWorker]
    parser_classes: list[type] = []  # the body is raw bytes, streamed by the view

    def handle_exception(self, exc: Exception) -> Response:
        # The problem handler dooms "the request's transaction"; this view has none, so it
        # must not doom a transaction that merely wraps the request (a test's).
        connection = transaction.get_connection()
        needs_rollback = connection.needs_rollback
        response = super().handle_exception(exc)
        connection.needs_rollback = needs_rollback
        return response

    def put(self, request: Request, artifact_id: int, path: str) -> HttpResponse:
        check_chunk_size(request._request)
        file_in_artifact = self.get_file_in_artifact(request, artifact_id, path)
        requested = parse_content_range(
            request.META.get("HTTP_CONTENT_RANGE"), file_in_artifact.file.size
        )
        if requested.probe:
            return self.probe(file_in_artifact)
        return self.receive(file_in_artifact, requested, request._request)

    def get_file_in_artifact(
        self, request: Request, artifact_id: int, path: str
    ) -> FileInArtifact:
        """The file being uploaded, once the caller may upload to its artifact."""
        found = (
            Artifact.objects.select_related("workspace__scope", "created_by_work_request")
            .filter(pk=artifact_id)
            .first()
        )
        if found is None:
            raise ProblemError(
                "Artifact not found",
                f"No artifact with id {artifact_id}",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        worker = request_worker(request)
        if worker is not None:
            if not found.written_by_worker(worker.id):
                raise ProblemError(
                    "Permission denied",
                    f"Artifact {artifact_id} was not created by a work request of this worker",
                    status_code=status.HTTP_403_FORBIDDEN,
                )
        else:
            workspace = found.workspace
            # Contributors can see the workspace: ask whether the caller can see it only to
            # choose between 404 and 403, not on every chunk of an allowed upload.
            if not workspace.can_create_artifacts(request.user):
                if not workspace.can_display(request.user):
                    raise ProblemError(
                        "Artifact not found",
                        f"No artifact with id {artifact_id}",
                        status_code=status.HTTP_404_NOT_FOUND,
                    )
                raise ProblemError(
                    "Permission denied",
                    f"You cannot upload files to artifacts of workspace {workspace.name}",
                    status_code=status.HTTP_403_FORBIDDEN,
                )
        file_in_artifact = (
            FileInArtifact.objects.select_related("file").filter(artifact=found, path=path).first()
        )
        if file_in_artifact is None:
            raise ProblemError(
                "File not found in artifact",
                f"Artifact {artifact_id} has no file {path!r}",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        file_in_artifact.artifact = found
        return file_in_artifact

    def probe(self, file_in_artifact: FileInArtifact) -> HttpResponse:
        """Tell the client where to resume (206), or that the file is complete (200)."""
        if file_in_artifact.complete:
            return HttpResponse(status=status.HTTP_200_OK)
        upload, received = received_so_far(file_in_artifact)
        if received < file_in_artifact.file.size:
            return range_response(status.HTTP_206_PARTIAL_CONTENT, received)
        # Every byte arrived but was never verified (an interrupted request, or a 0-byte
        # file): verify now, so that "complete" in the reply is the truth.
        with locked_partial_upload(file_in_artifact, upload) as partial:
            if partial is None:
                return HttpResponse(status=status.HTTP_200_OK)
            if partial.received < file_in_artifact.file.size:
                return range_response(status.HTTP_206_PARTIAL_CONTENT, partial.received)
            try:
                complete_upload(file_in_artifact, partial)
            except ProblemError as error:
                if error.status_code != status.HTTP_409_CONFLICT:
                    raise
                return range_response(status.HTTP_206_PARTIAL_CONTENT, 0)
        return HttpResponse(status=status.HTTP_200_OK)

    def receive(
        self, file_in_artifact: FileInArtifact, requested: RequestedRange, body: HttpRequest
    ) -> HttpResponse:
        """Write one chunk; verify and store the file when it is the last one."""
        if file_in_artifact.complete:
            return HttpResponse(status=status.HTTP_201_CREATED)
        content_length = body.META.get("CONTENT_LENGTH")
        if content_length and content_length.isdigit() and int(content_length) > requested.length:
            raise ProblemError(
                "Request body longer than the Content-Range",
                f"The range announces {requested.length} bytes, the body has {content_length}",
            )
        upload, received = received_so_far(file_in_artifact)
        self.check_start(requested, received)
        with locked_partial_upload(file_in_artifact, upload) as partial:
            if partial is None:
                return HttpResponse(status=status.HTTP_201_CREATED)
            self.check_start(requested, partial.received)
            try:
                write_body(partial, body_reader(body), requested)
            except ClientDisconnectedError:
                # Nobody hears the answer; what arrived is kept (and hashed) for a resume.
                return HttpResponse(status=status.HTTP_400_BAD_REQUEST)
            received = partial.received
            if received < requested.size:
                return range_response(status.HTTP_200_OK, received)
            complete_upload(file_in_artifact, partial)
        return HttpResponse(status=status.HTTP_201_CREATED)

    @staticmethod
    def check_start(requested: RequestedRange, received: int) -> None:
        if requested.start > received:
            raise ProblemError(
                "Range start beyond the bytes received",
                f"The server has received {received} bytes: send the file from offset {received}",
            )


urlpatterns: list[URLPattern] = [
    path(
        "artifact/<int:artifact_id>/files/<path:path>/",
        # No transaction around the request: bodies of 50 MiB stream to disk.
        transaction.non_atomic_requests(UploadFileView.as_view()),
        name="artifact-file-upload",
    ),
]
