"""Tests of `debusine-admin list_tokens`."""

from __future__ import annotations

import yaml
from pytest_django import DjangoAssertNumQueries

from debusine.server.db.models import Token, Worker
from debusine.server.management.tests.helpers import run, run_fails
from debusine.testing.playground import Playground


def test_list_tokens_never_shows_keys(playground: Playground) -> None:
    carol = playground.create_user("carol")
    key = playground.create_user_token(carol)
    _, worker_key = playground.create_worker("builder")
    Worker.objects.create_with_activation_token("new.example.org", "external")

    out = run("list_tokens")

    assert key not in out and worker_key not in out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["HASH", "OWNER", "ENABLED"]
    owners = [line.split()[1] for line in lines[1:]]
    assert owners == ["carol", "worker:builder", "activation:new-example-org"]
    token = Token.objects.get_by_key(key)
    assert token is not None
    assert lines[1].startswith(token.hash[:12] + "  carol")


def test_list_tokens_of_one_user_as_yaml(
    playground: Playground, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    carol = playground.create_user("carol")
    playground.create_user_token(carol)
    Token.objects.create_with_key(user=carol, comment="old", enabled=False)
    playground.create_user_token(playground.create_user("dave"))

    with django_assert_max_num_queries(4):
        listed = yaml.safe_load(run("list_tokens", "--username", "carol", "--yaml"))

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


def test_list_tokens_of_unknown_user_fails(db: None) -> None:
    assert run_fails("list_tokens", "--username", "ghost") == "user 'ghost' does not exist"
