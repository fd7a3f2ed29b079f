"""Tests of `debusine-admin create_token`."""

from __future__ import annotations

from debusine.server.db.models import Token
from debusine.server.management.tests.helpers import run, run_fails
from debusine.testing.playground import Playground


def test_create_token_prints_an_enabled_key(playground: Playground) -> None:
    user = playground.create_user("carol")

    key = run("create_token", "carol", "--comment", "laptop").strip()

    token = Token.objects.get_by_key(key)
    assert token is not None
    assert (token.user, token.enabled, token.comment) == (user, True, "laptop")
    assert len(key) == 64


def test_create_token_errors(playground: Playground) -> None:
    playground.create_user("carol")

    assert run_fails("create_token", "ghost") == "user 'ghost' does not exist"
    assert run_fails("create_token", "carol", "--comment", "x" * 101) == (
        "the comment is longer than 100 characters"
    )
    assert not Token.objects.exists()
