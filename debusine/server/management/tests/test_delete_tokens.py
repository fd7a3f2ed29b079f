"""Tests of `debusine-admin delete_tokens`."""

from __future__ import annotations

from debusine.server.db.models import Token
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import Playground


def test_delete_tokens_of_a_user(playground: Playground) -> None:
    carol = playground.create_user("carol")
    playground.create_user_token(carol)
    playground.create_user_token(carol)
    kept = playground.create_user_token(playground.create_user("dave"))

    out = run("delete_tokens", "--username", "carol", "--yes")

    assert out == "Deleted 2 token(s)\n"
    assert list(Token.objects.values_list("user__username", flat=True)) == ["dave"]
    assert Token.objects.get_by_key(kept) is not None


def test_delete_one_token_after_confirmation(playground: Playground) -> None:
    carol = playground.create_user("carol")
    key = playground.create_user_token(carol)
    playground.create_user_token(carol)

    out = run("delete_tokens", "--token", key, stdin="y\n")

    assert out == "Delete 1 token(s)? [y/N] Deleted 1 token(s)\n"
    assert Token.objects.get_by_key(key) is None
    assert Token.objects.count() == 1


def test_declined_confirmation_deletes_nothing(playground: Playground) -> None:
    playground.create_user_token(playground.create_user("carol"))

    assert run_fails("delete_tokens", stdin="n\n") == "cancelled: nothing deleted"
    assert run_fails("delete_tokens", stdin="") == "cancelled: nothing deleted"
    assert Token.objects.count() == 1


def test_delete_all_user_tokens_keeps_worker_tokens(playground: Playground) -> None:
    playground.create_user_token(playground.create_user("carol"))
    worker, _ = playground.create_worker("builder")

    assert run("delete_tokens", "--yes") == "Deleted 1 token(s)\n"
    assert list(Token.objects.all()) == [worker.token]
    assert run("delete_tokens", "--yes") == "No tokens to delete\n"


def test_delete_tokens_errors(playground: Playground) -> None:
    _, worker_key = playground.create_worker("builder")

    assert run_fails("delete_tokens", "--token", "0" * 64, "--yes") == "no token has this key"
    assert run_fails("delete_tokens", "--token", worker_key, "--yes") == (
        "this key is a worker's token: use `worker disable` instead"
    )
    assert run_fails("delete_tokens", "--username", "ghost") == "user 'ghost' does not exist"
    run_usage_error("delete_tokens", "--username", "a", "--token", "b")
    assert Token.objects.count() == 1
