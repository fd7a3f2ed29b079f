"""The ASGI wrapper that streams upload bodies to the view instead of letting Django spool them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from debusine.server.api import streamed_body as module
from debusine.server.api.streamed_body import (
    SCOPE_KEY,
    ClientDisconnectedError,
    StreamedBody,
    streamed_body,
    streamed_body_application,
)

UPLOAD_PATH = "/api/1.0/artifact/12/files/dir/a.bin/"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread, as uvicorn's runs beside the view's thread."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(5)
    running.close()


def receiver(messages: list[dict[str, Any]]) -> Any:
    """An ASGI `receive` giving `messages`, then waiting forever; it records each call."""
    calls: list[str] = []

    async def receive() -> dict[str, Any]:
        calls.append("receive")
        if messages:
            return messages.pop(0)
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    receive.calls = calls  # type: ignore[attr-defined]
    return receive


def body(*parts: bytes) -> list[dict[str, Any]]:
    return [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]


def test_reads_the_whole_body_in_batches(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "BATCH_SIZE", 5)
    stream = StreamedBody(receiver(body(b"abc", b"def", b"ghij", b"k")), loop)

    batches = []
    while batch := stream.read_batch():
        batches.append(bytes(batch))

    # Messages joined up to a batch: abc+def, ghij+k.
    assert batches == [b"abcdef", b"ghijk"]
    assert stream.read_batch() == b""
    assert stream.finished.is_set()


def test_read_as_a_file(loop: asyncio.AbstractEventLoop) -> None:
    stream = StreamedBody(receiver(body(b"abc", b"defg")), loop)
    assert stream.read(2) == b"ab"
    assert stream.read(-1) == b"cdefg"
    assert stream.read(3) == b""


def test_a_disconnection_gives_the_bytes_that_arrived_then_fails(
    loop: asyncio.AbstractEventLoop,
) -> None:
    messages = [*body(b"abc", b"def")[:1], {"type": "http.disconnect"}]
    messages[0]["more_body"] = True
    stream = StreamedBody(receiver(messages), loop)

    assert bytes(stream.read_batch()) == b"abc"
    with pytest.raises(ClientDisconnectedError):
        stream.read_batch()
    with pytest.raises(ClientDisconnectedError):
        stream.read_batch()


def test_disconnection_before_any_byte(loop: asyncio.AbstractEventLoop) -> None:
    stream = StreamedBody(receiver([{"type": "http.disconnect"}]), loop)
    with pytest.raises(ClientDisconnectedError):
        stream.read_batch()


def run_wrapped(scope: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """What the wrapped application sees: its scope, its first message, the body it reads."""
    seen: dict[str, Any] = {}

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["scope"] = scope
        seen["first"] = await receive()
        stream = streamed_body(type("Request", (), {"scope": scope})())
        if stream is not None:
            seen["body"] = await asyncio.to_thread(stream.read, -1)
            # Django's disconnection listener, once the body is read: the connection's own.
            seen["after"] = await receive()

    async def send(message: Any) -> None:
        raise AssertionError(f"nothing is sent here: {message}")

    async def main() -> None:
        wrapped = streamed_body_application(application)
        await wrapped(scope, receiver(messages), send)

    asyncio.run(main())
    return seen


def test_upload_bodies_are_streamed_and_django_gets_an_empty_one() -> None:
    scope = {"type": "http", "method": "PUT", "path": UPLOAD_PATH}
    seen = run_wrapped(scope, [*body(b"abc", b"def"), {"type": "http.disconnect"}])

    assert seen["first"] == {"type": "http.request", "body": b"", "more_body": False}
    assert isinstance(seen["scope"][SCOPE_KEY], StreamedBody)
    assert seen["body"] == b"abcdef"
    assert seen["after"] == {"type": "http.disconnect"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", UPLOAD_PATH), ("PUT", "/api/1.0/artifact/12/"), ("POST", "/api/1.0/artifact/")],
)
def test_other_requests_are_left_to_django(method: str, path: str) -> None:
    scope = {"type": "http", "method": method, "path": path}
    seen = run_wrapped(scope, body(b"abc"))

    assert SCOPE_KEY not in seen["scope"]
    assert seen["first"] == {"type": "http.request", "body": b"abc", "more_body": False}
    assert "body" not in seen
