# mypy: disable-error-code="no-untyped-call"
# (asgiref's ApplicationCommunicator has no annotations.)
"""
Refused tokens on the websockets count against the connection's address like the API's: past
the limit, the rejection frame says to retry later. The consumers run in process (the ASGI
application, spoken to through asgiref's communicator) on the real database and Redis.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from asgiref.testing import ApplicationCommunicator

from debusine.server.api import token_failures
from debusine.server.api.worker_websocket import REJECTED_REASON
from debusine.server.project.instance import SERVING_ASGI_VARIABLE
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 2
WORKER_PATH = "/api/ws/1.0/worker/connect/"
COMPLETION_PATH = "/api/ws/1.0/work-request/on-completed/"


@pytest.fixture
def limited(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Importing the ASGI application marks the process as a server (pooled connections);
    # undone after the test, so that processes later tests start do not inherit the mark.
    monkeypatch.setenv(SERVING_ASGI_VARIABLE, "0")
    settings.DEBUSINE_TOKEN_FAILURE_LIMIT = LIMIT
    settings.DEBUSINE_TOKEN_FAILURE_WINDOW = 60
    prefix = f"test-ws-token-failures-{uuid.uuid4().hex}"
    settings.DEBUSINE_REDIS_KEY_PREFIX = prefix
    yield
    client = redis.Redis.from_url(settings.DEBUSINE_REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def rejection(path: str, address: str, token: str | None, refused: bool = True) -> dict[str, Any]:
    """
    Open a websocket from `address`; return the first frame the server sends after accepting
    (then, when `refused`, check that the server closes it; else close it).
    """
    from debusine.server.project.asgi import application

    headers = [(b"token", token.encode())] if token is not None else []
    scope = {
        "type": "websocket",
        "path": path,
        "query_string": b"",
        "headers": headers,
        "client": (address, 40000),
        "subprotocols": [],
    }

    async def exchange() -> dict[str, Any]:
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "websocket.connect"})
        assert (await communicator.receive_output(10))["type"] == "websocket.accept"
        frame = await communicator.receive_output(10)
        if refused:
            assert (await communicator.receive_output(10))["type"] == "websocket.close"
        # The peer's side of the closing handshake; the consumer ends with it.
        await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await communicator.wait(10)
        text: dict[str, Any] = json.loads(frame["text"])
        return text

    return asyncio.run(exchange())


def failures(address: str) -> int:
    value = token_failures.redis_client().get(token_failures.counter_key(address))
    return int(value or 0)


def test_worker_websocket_counts_refused_tokens_per_address(limited: None) -> None:
    for _ in range(LIMIT):
        frame = rejection(WORKER_PATH, "192.0.2.7", "0" * 64)
        assert frame["reason"] == REJECTED_REASON
        assert frame["reason_code"] == "TOKEN_DISABLED"

    frame = rejection(WORKER_PATH, "192.0.2.7", "0" * 64)

    # Over the limit: the delay instead of the reason; still TOKEN_DISABLED, so that
    # Debusine workers keep waiting between attempts rather than reconnecting at once.
    assert frame["type"] == "connection_rejected"
    assert frame["reason_code"] == "TOKEN_DISABLED"
    assert frame["reason"].startswith("This address presented too many invalid tokens")
    assert failures("192.0.2.7") == LIMIT + 1
    # Another address is not affected, and no token at all is not a failure.
    assert rejection(WORKER_PATH, "192.0.2.8", "0" * 64)["reason"] == REJECTED_REASON
    rejection(WORKER_PATH, "192.0.2.9", None)
    assert failures("192.0.2.9") == 0


def test_valid_worker_token_still_connects_from_a_limited_address(
    limited: None, playground: Playground
) -> None:
    for _ in range(LIMIT + 1):
        rejection(WORKER_PATH, "192.0.2.7", "f" * 64)
    _worker, key = playground.create_worker()
    assert rejection(WORKER_PATH, "192.0.2.7", key, refused=False)["text"] == "connected"


def test_completion_websocket_counts_refused_tokens(limited: None) -> None:
    for _ in range(LIMIT):
        rejection(COMPLETION_PATH, "192.0.2.7", "0" * 64)
    frame = rejection(COMPLETION_PATH, "192.0.2.7", "0" * 64)
    assert frame["type"] == "connection_rejected"
    assert frame["reason"].startswith("This address presented too many invalid tokens")
    assert failures("192.0.2.7") == LIMIT + 1
