"""
Tests of the token brute force limit: refused tokens counted per client address in Redis
(the real one the tests use), 429 with Retry-After past the limit, valid tokens never slowed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import Client

from debusine.server.api import token_failures
from debusine.server.db.models import User
from debusine.testing.playground import Playground, api_client

WHOAMI = "/api/1.0/whoami/"
LIMIT = 3


@pytest.fixture
def limited(db: None, settings: Any) -> Iterator[None]:
    """A limit of LIMIT refusals per minute, counted under a key prefix of this test's own."""
    settings.DEBUSINE_TOKEN_FAILURE_LIMIT = LIMIT
    settings.DEBUSINE_TOKEN_FAILURE_WINDOW = 60
    prefix = f"test-token-failures-{uuid.uuid4().hex}"
    settings.DEBUSINE_REDIS_KEY_PREFIX = prefix
    client = redis.Redis.from_url(settings.DEBUSINE_REDIS_URL)
    yield
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def from_address(address: str, token: str | None) -> Client:
    headers = {"Token": token} if token is not None else {}
    return Client(headers=headers, REMOTE_ADDR=address)


def test_refused_tokens_past_the_limit_get_429_with_retry_after(
    limited: None, playground: Playground, user: User
) -> None:
    attacker = from_address("192.0.2.1", "0" * 64)
    for _ in range(LIMIT):
        assert attacker.get(WHOAMI).status_code == 401

    response = attacker.get(WHOAMI)

    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 60
    assert response.json()["title"] == "Too many invalid tokens"
    # Disabled tokens count too, and get the same answer once the address is over the limit.
    disabled = playground.create_user_token(user, enabled=False)
    assert from_address("192.0.2.1", disabled).get(WHOAMI).status_code == 429
    key = f"{token_failures.counter_key('192.0.2.1')}"
    assert int(token_failures.redis_client().get(key) or 0) == LIMIT + 2


def test_valid_tokens_are_never_slowed(
    limited: None, playground: Playground, user: User, user_token: str
) -> None:
    for _ in range(LIMIT + 2):
        from_address("192.0.2.1", "f" * 64).get(WHOAMI)
    assert from_address("192.0.2.1", "f" * 64).get(WHOAMI).status_code == 429

    # Same address, valid tokens of a user and a worker, and no token at all: served.
    assert from_address("192.0.2.1", user_token).get(WHOAMI).json()["user"] == "alice"
    _, worker_key = playground.create_worker()
    worker = from_address("192.0.2.1", worker_key)
    assert worker.get("/api/1.0/work-request/get-next-for-worker/").status_code == 204
    assert from_address("192.0.2.1", None).get(WHOAMI).status_code == 200
    # They did not count: the counter is where the refusals left it.
    count = token_failures.redis_client().get(token_failures.counter_key("192.0.2.1"))
    assert int(count or 0) == LIMIT + 3


def test_addresses_are_counted_apart(limited: None) -> None:
    for _ in range(LIMIT + 1):
        from_address("192.0.2.1", "0" * 64).get(WHOAMI)
    assert from_address("192.0.2.1", "0" * 64).get(WHOAMI).status_code == 429
    assert from_address("192.0.2.2", "0" * 64).get(WHOAMI).status_code == 401


def test_refusals_on_the_worker_hot_path_and_register_count(limited: None) -> None:
    client = from_address("192.0.2.1", "0" * 64)
    statuses = [
        client.get("/api/1.0/work-request/get-next-for-worker/").status_code,
        client.put("/api/1.0/work-request/1/completed/", "{}", "application/json").status_code,
        client.post(
            "/api/1.0/worker/register/",
            {"token": "a" * 64, "fqdn": "w.example.org"},
            "application/json",
        ).status_code,
        client.get(WHOAMI).status_code,
    ]
    assert statuses == [401, 401, 401, 429]


def test_redis_down_counts_nothing_and_refuses_as_usual(limited: None, settings: Any) -> None:
    settings.DEBUSINE_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    client = from_address("192.0.2.1", "0" * 64)
    assert [client.get(WHOAMI).status_code for _ in range(LIMIT + 2)] == [401] * (LIMIT + 2)


def test_no_limit_when_turned_off(limited: None, settings: Any) -> None:
    settings.DEBUSINE_TOKEN_FAILURE_LIMIT = 0
    client = api_client("0" * 64)
    assert {client.get(WHOAMI).status_code for _ in range(LIMIT + 2)} == {401}
