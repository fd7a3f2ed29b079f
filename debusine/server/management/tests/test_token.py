"""Tests of `debusine-admin token create|list|delete`."""

from __future__ import annotations

import yaml
from pytest_django import DjangoAssertNumQueries

from debusine.server.db.models import Token, Worker
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import Playground


def test_token_create_prints_an_enabled_key(playground: Playground) -> None:
    user = playground.create_user("carol")

    key = run("token", "create", "carol", "--comment", "laptop").strip()

    token = Token.objects.get_by_key(key)
    assert token is not None
    assert (token.user, token.enabled, token.comment) == (user, True, "laptop")
    assert len(key) == 64


def test_token_create_errors(playground: Playground) -> None:
    playground.create_user("carol")

    assert run_fails("token", "create", "ghost") == "user 'ghost' does not exist"
    assert run_fails("token", "create", "carol", "--comment", "x" * 101) == (
        "the comment is longer than 100 characters"
    )
    assert not Token.objects.exists()


def test_token_list_never_shows_keys(playground: Playground) -> None:
    carol = playground.create_user("carol")
    key = playground.create_user_token(carol)
    _, worker_key = playground.create_worker("builder")
    Worker.objects.create_with_activation_token("new.example.org", "external")

    out = run("token", "list")

    assert key not in out and worker_key not in out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["HASH", "OWNER", "ENABLED"]
    owners = [line.split()[1] for line in lines[1:]]
    assert owners == ["carol", "worker:builder", "activation:new-example-org"]
    token = Token.objects.get_by_key(key)
    assert token is not None
    assert lines[1].startswith(token.hash[:12] + "  carol")


def test_token_list_of_one_user_as_yaml(
    playground: Playground, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    carol = playground.create_user("carol")
    playground.create_user_token(carol)
    Token.objects.create_with_key(user=carol, comment="old", enabled=False)
    playground.create_user_token(playground.create_user("dave"))

    with django_assert_max_num_queries(4):
        listed = yaml.safe_load(run("token", "list", "--username", "carol", "--yaml"))

    assert [(item["owner"], item["enabled"], item["comment"]) for item in listed] == [
        ("carol", True, ""),
        ("carol", False, "old"),
    ]
    assert set(listed[0]) == {
        "hash",
        "owner",
        "enabled",
        "comment",
        "created_at",
        "expire_at",
        "last_seen_at",
    }
    assert len(listed[0]["hash"]) == 12


def test_token_list_of_unknown_user_fails(db: None) -> None:
    assert run_fails("token", "list", "--username", "ghost") == "user 'ghost' does not exist"


def test_token_delete_of_a_user(playground: Playground) -> None:
    carol = playground.create_user("carol")
    playground.create_user_token(carol)
    playground.create_user_token(carol)
    kept = playground.create_user_token(playground.create_user("dave"))

    out = run("token", "delete", "--username", "carol", "--yes")

    assert out == "Deleted 2 token(s)\n"
    assert list(Token.objects.values_list("user__username", flat=True)) == ["dave"]
    assert Token.objects.get_by_key(kept) is not None


def test_token_delete_one_after_confirmation(playground: Playground) -> None:
    carol = playground.create_user("carol")
    key = playground.create_user_token(carol)
    playground.create_user_token(carol)

    out = run("token", "delete", "--token", key, stdin="y\n")

    assert out == "Delete 1 token(s)? [y/N] Deleted 1 token(s)\n"
    assert Token.objects.get_by_key(key) is None
    assert Token.objects.count() == 1


def test_declined_confirmation_deletes_nothing(playground: Playground) -> None:
    playground.create_user_token(playground.create_user("carol"))

    assert run_fails("token", "delete", stdin="n\n") == "cancelled: nothing deleted"
    assert run_fails("token", "delete", stdin="") == "cancelled: nothing deleted"
    assert Token.objects.count() == 1


def test_token_delete_all_user_tokens_keeps_worker_tokens(playground: Playground) -> None:
    playground.create_user_token(playground.create_user("carol"))
    worker, _ = playground.create_worker("builder")

    assert run("token", "delete", "--yes") == "Deleted 1 token(s)\n"
    assert list(Token.objects.all()) == [worker.token]
    assert run("token", "delete", "--yes") == "No tokens to delete\n"


def test_token_delete_errors(playground: Playground) -> None:
    _, worker_key = playground.create_worker("builder")

    assert run_fails("token", "delete", "--token", "0" * 64, "--yes") == "no token has this key"
    assert run_fails("token", "delete", "--token", worker_key, "--yes") == (
        "this key is a worker's token: use `worker disable` instead"
    )
    assert run_fails("token", "delete", "--username", "ghost") == "user 'ghost' does not exist"
    run_usage_error("token", "delete", "--username", "a", "--token", "b")
    assert Token.objects.count() == 1
