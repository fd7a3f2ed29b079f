"""Tests of `debusine-admin group`."""

from __future__ import annotations

import yaml

from debusine.server.db.models import Group, GroupMembership, GroupRoles, Scope
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import Playground


def test_create_group(playground: Playground) -> None:
    assert run("group", "create", "devs") == "Created group debusine/devs\n"
    Scope.objects.create(name="other")
    run("group", "create", "other/devs", "--ephemeral")

    assert Group.objects.get(scope=playground.scope, name="devs").ephemeral is False
    assert Group.objects.get(scope__name="other", name="devs").ephemeral is True


def test_create_group_errors(playground: Playground) -> None:
    playground.create_group("devs")

    assert (
        run_fails("group", "create", "devs") == "group 'devs' already exists in scope 'debusine'"
    )
    assert run_fails("group", "create", "nope/devs") == "scope 'nope' does not exist"
    assert run_fails("group", "create", "bad name").startswith("name: ")
    assert Group.objects.count() == 1


def test_list_groups(playground: Playground) -> None:
    playground.create_group("zeta")
    playground.create_group("alpha")

    lines = run("group", "list", "debusine").splitlines()
    listed = yaml.safe_load(run("group", "list", "debusine", "--yaml"))

    assert [line.split()[0] for line in lines] == ["NAME", "alpha", "zeta"]
    assert [item["name"] for item in listed] == ["alpha", "zeta"]
    assert listed[0]["ephemeral"] is False
    assert run_fails("group", "list", "nope") == "scope 'nope' does not exist"


def test_members_add_remove_set(playground: Playground) -> None:
    for name in ("ann", "bob", "cid"):
        playground.create_user(name)
    group = playground.create_group("devs")

    assert run("group", "members", "devs", "--add", "bob", "ann").splitlines() == [
        "USER  ROLE",
        "ann   member",
        "bob   member",
    ]
    GroupMembership.objects.filter(user__username="ann").update(role=GroupRoles.ADMIN)
    # Adding an existing member keeps their role.
    run("group", "members", "debusine/devs", "--add", "ann", "cid")
    assert yaml.safe_load(run("group", "members", "devs", "--yaml")) == [
        {"username": "ann", "role": "admin"},
        {"username": "bob", "role": "member"},
        {"username": "cid", "role": "member"},
    ]

    run("group", "members", "devs", "--remove", "bob")
    assert set(group.users.values_list("username", flat=True)) == {"ann", "cid"}

    run("group", "members", "devs", "--set", "bob", "cid")
    assert set(group.users.values_list("username", flat=True)) == {"bob", "cid"}

    run("group", "members", "devs", "--set")
    assert not group.users.exists()


def test_members_errors_change_nothing(playground: Playground) -> None:
    group = playground.create_group("devs", users=[playground.create_user("ann")])

    assert run_fails("group", "members", "devs", "--add", "ghost", "ann", "nobody") == (
        "unknown users: ghost, nobody"
    )
    assert run_fails("group", "members", "qa") == "group 'qa' does not exist in scope 'debusine'"
    run_usage_error("group", "members", "devs", "--add", "ann", "--remove", "ann")
    run_usage_error("group", "members", "devs", "--add")
    assert list(group.users.values_list("username", flat=True)) == ["ann"]
