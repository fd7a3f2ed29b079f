"""
Request bodies that a synchronous view reads straight from the ASGI connection.

Django's ASGI handler reads a whole request body into a temporary file (spooled to disk past
FILE_UPLOAD_MAX_MEMORY_SIZE) before the view runs: a 50 MiB upload chunk is then written
twice and read once more than needed. For the routes of `STREAMED_ROUTES` (file uploads),
`streamed_body_application` gives Django an empty body instead, and puts a `StreamedBody` in
the ASGI scope: the view reads it (in its thread) while the event loop receives the bytes,
one batch ahead, so that receiving and writing to disk overlap and memory stays at two
batches whatever the size of the body.

Django's handler also listens for the client's disconnection while the view runs (it calls
`receive` and expects nothing but `http.disconnect`): that listener is held back until the view
has read the whole body, and then listens as usual. A client that goes away mid-body is the
view's to handle (`ClientDisconnectedError` once the bytes that did arrive are read).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Awaitable, Callable
from typing import Any

#: The key of the ASGI scope under which the view finds the body.
SCOPE_KEY = "debusine.streamed_body"

#: (method, path) of the requests whose body is streamed to the view.
STREAMED_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("PUT", re.compile(r"^/api/1\.0/artifact/[0-9]+/files/.+/$")),
]

#: Bytes gathered from the connection before the view gets them (one batch is received
#: while the view writes the previous one).
BATCH_SIZE = 4 * 1024 * 1024

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


class ClientDisconnectedError(Exception):
    """The client went away before sending the whole body."""


class StreamedBody:
    """
    A request body read by a synchronous view, in its own thread, from the event loop's
    `receive` (`read()` blocks that thread, never the loop).
    """

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop) -> None:
        self._receive = receive
        self._loop = loop
        self._body_done = False
        self._disconnected = False
        #: Set once the view has been given the whole body (or the client went away).
        self.finished = asyncio.Event()
        self._next: concurrent.futures.Future[bytes] | None = None
        self._buffer = memoryview(b"")

    # --- Event loop side --------------------------------------------------------------------

    async def _fill(self, wanted: int) -> bytes:
        if self._disconnected:
            raise ClientDisconnectedError("the client closed the connection")
        parts: list[bytes] = []
        received = 0
        while received < wanted and not self._body_done:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._body_done = self._disconnected = True
                self.finished.set()
                if not parts:
                    raise ClientDisconnectedError("the client closed the connection")
                break  # the bytes that did arrive first, the error at the next read
            body = message.get("body", b"")
            if body:
                parts.append(body)
                received += len(body)
            if not message.get("more_body", False):
                self._body_done = True
        if self._body_done:
            self.finished.set()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def receive_for_django(self) -> dict[str, Any]:
        """
        What Django's handler receives: an empty body at once, then (its disconnection
        listener) nothing until the view has read the whole body, then the connection's own.
        """
        await self.finished.wait()
        if self._disconnected:
            # The view saw it and answers; Django's listener would only cancel the request
            # while the view still runs in its thread. Django cancels this wait when done.
            await asyncio.get_running_loop().create_future()
        message: dict[str, Any] = await self._receive()
        return message

    # --- View side (a worker thread) ---------------------------------------------------------

    def _request_batch(self) -> None:
        self._next = asyncio.run_coroutine_threadsafe(self._fill(BATCH_SIZE), self._loop)

    def read_batch(self) -> bytes | memoryview:
        """
        The next bytes of the body, as they come (up to BATCH_SIZE); empty at the end. Raises
        ClientDisconnectedError when the client went away first.
        """
        if self._buffer:
            rest, self._buffer = self._buffer, memoryview(b"")
            return rest
        if self._next is None:
            if self._body_done and not self._disconnected:
                return b""
            self._request_batch()
        assert self._next is not None
        batch = self._next.result()
        self._next = None
        if batch and (not self._body_done or self._disconnected):
            self._request_batch()  # receive the next one while the caller writes this one
        return batch

    def read(self, size: int = -1) -> bytes:
        """Read up to `size` bytes (all that is left when negative), as a file would."""
        if size < 0:
            parts = []
            while batch := self.read_batch():
                parts.append(bytes(batch))
            return b"".join(parts)
        if not self._buffer:
            self._buffer = memoryview(self.read_batch())
        piece, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(piece)


def streamed_body(request: Any) -> StreamedBody | None:
    """The body of a request that `streamed_body_application` streams, else None."""
    scope = getattr(request, "scope", None)
    if not isinstance(scope, dict):
        return None
    body = scope.get(SCOPE_KEY)
    return body if isinstance(body, StreamedBody) else None


def is_streamed(scope: dict[str, Any]) -> bool:
    method = scope.get("method", "")
    path = scope.get("path", "")
    return any(method == wanted and pattern.match(path) for wanted, pattern in STREAMED_ROUTES)


def streamed_body_application(application: ASGIApp) -> ASGIApp:
    """Wrap Django's ASGI application so that the bodies of `STREAMED_ROUTES` are streamed."""

    async def wrapper(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not is_streamed(scope):
            await application(scope, receive, send)
            return
        body = StreamedBody(receive, asyncio.get_running_loop())
        empty_body_given = False

        async def receive_for_django() -> dict[str, Any]:
            nonlocal empty_body_given
            if not empty_body_given:
                empty_body_given = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return await body.receive_for_django()

        await application({**scope, SCOPE_KEY: body}, receive_for_django, send)

    return wrapper
