"""Tests of `GET /api/1.0/whoami/`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from debusine.server.db.models import Token, User
from debusine.testing.playground import Playground, api_client

WHOAMI_URL = "/api/1.0/whoami/"


def test_anonymous(db: None) -> None:
    response = api_client().get(WHOAMI_URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"user": "<anonymous>", "auth": False, "worker_token": False}


def test_user_token(user: User, user_token: str) -> None:
    assert api_client(user_token).get(WHOAMI_URL).json() == {
        "user": "alice",
        "auth": True,
        "worker_token": False,
    }


def test_worker_token_is_not_a_user(playground: Playground) -> None:
    _, key = playground.create_worker()
    assert api_client(key).get(WHOAMI_URL).json() == {
        "user": "<anonymous>",
        "auth": True,
        "worker_token": True,
    }


@pytest.mark.parametrize(
    ("kind", "status_code"),
    [("disabled", 403), ("expired", 401), ("unknown", 401), ("inactive-user", 403)],
)
def test_invalid_tokens_are_refused(
    playground: Playground, user: User, kind: str, status_code: int
) -> None:
    if kind == "disabled":
        key = playground.create_user_token(user, enabled=False)
    elif kind == "expired":
        _, key = Token.objects.create_with_key(
            user=user, enabled=True, expire_at=timezone.now() - timedelta(seconds=1)
        )
    elif kind == "inactive-user":
        key = playground.create_user_token(user)
        user.is_active = False
        user.save()
    else:
        key = "f" * 64
    response = api_client(key).get(WHOAMI_URL)
    assert response.status_code == status_code
    assert response["Content-Type"] == "application/problem+json"
    assert "user" not in response.json()


def test_every_known_token_is_recorded_as_seen(playground: Playground, user: User) -> None:
    for enabled in (True, False):
        response = api_client(playground.create_user_token(user, enabled=enabled)).get(WHOAMI_URL)
        assert response.status_code == (200 if enabled else 403)

    # Usable or not, as Debusine servers do (protocol §1.1).
    seen = [token.last_seen_at for token in Token.objects.filter(user=user)]
    assert len(seen) == 2
    assert None not in seen


def test_disabled_worker_token_is_refused(playground: Playground) -> None:
    _, key = playground.create_worker(enabled=False)
    response = api_client(key).get(WHOAMI_URL)
    assert response.status_code == 403
    assert response.json()["title"] == "Token disabled"


def test_lowercase_header_and_double_slash(user: User, user_token: str) -> None:
    client = Client(headers={"token": user_token})
    for path in (WHOAMI_URL, "/api//1.0//whoami/"):
        assert client.get(path).json()["user"] == "alice"


def test_unknown_scope_is_a_plain_404(db: None) -> None:
    # The one error under /api/ that is not a problem: Debusine's 0.11 client crashes on a
    # problem there (tests/compat/test_reference_client.py::test_unknown_scope_is_not_found).
    response = api_client(scope="nosuchscope").get(WHOAMI_URL)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/plain")
    assert response.content == b"Scope 'nosuchscope' not found"


def test_only_get_is_allowed(db: None) -> None:
    response = api_client().post(WHOAMI_URL, {}, format="json")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/problem+json"
