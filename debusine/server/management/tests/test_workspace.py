"""Tests of `debusine-admin workspace`."""

from __future__ import annotations

from datetime import timedelta

import yaml
from pytest_django import DjangoAssertNumQueries

from debusine.server.db.models import Group, Scope, Workspace, WorkspaceRole, WorkspaceRoles
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import Playground


def test_create_private_workspace_in_default_scope(playground: Playground) -> None:
    out = run("workspace", "create", "team")

    assert out == "Created workspace debusine/team\n"
    workspace = Workspace.objects.get(scope=playground.scope, name="team")
    assert workspace.public is False
    assert workspace.default_expiration_delay == timedelta(0)
    assert not workspace.roles.exists()


def test_create_public_workspace_with_expiry_and_new_owners_group(playground: Playground) -> None:
    Scope.objects.create(name="other")

    run(
        "workspace",
        "create",
        "other/team",
        "--public",
        "--default-expiration-delay",
        "30",
        "--with-owners-group",
        "team-owners",
    )

    workspace = Workspace.objects.get(scope__name="other", name="team")
    assert workspace.public is True
    assert workspace.default_expiration_delay == timedelta(days=30)
    group = Group.objects.get(scope__name="other", name="team-owners")
    assert workspace.roles.get().group == group
    assert workspace.roles.get().role == WorkspaceRoles.OWNER


def test_create_workspace_with_existing_owners_group(playground: Playground) -> None:
    group = playground.create_group("admins")

    run("workspace", "create", "debusine/team", "--private", "--with-owners-group", "admins")

    assert WorkspaceRole.objects.get(resource__name="team").group == group


def test_create_workspace_errors_change_nothing(playground: Playground) -> None:
    assert run_fails("workspace", "create", "System") == (
        "workspace 'System' already exists in scope 'debusine'"
    )
    assert run_fails("workspace", "create", "nope/team") == "scope 'nope' does not exist"
    assert run_fails("workspace", "create", "a/b/c") == (
        "invalid workspace 'a/b/c': expected SCOPE/NAME or NAME"
    )
    assert run_fails("workspace", "create", "debusine/") == (
        "invalid workspace 'debusine/': expected SCOPE/NAME or NAME"
    )
    assert run_fails("workspace", "create", "bad name").startswith("name: ")
    assert run_fails("workspace", "create", "team", "--with-owners-group", "bad group").startswith(
        "name: "
    )
    assert not Workspace.objects.filter(name="team").exists()


def test_create_workspace_usage_errors(db: None) -> None:
    run_usage_error("workspace", "create", "team", "--public", "--private")
    run_usage_error("workspace", "create", "team", "--default-expiration-delay", "-1")


def test_list_workspaces_table(playground: Playground) -> None:
    playground.create_workspace("alpha")
    playground.workspace.grant_role(playground.create_group("devs"), WorkspaceRoles.CONTRIBUTOR)

    lines = run("workspace", "list").splitlines()

    assert lines[0].split() == ["WORKSPACE", "PUBLIC", "EXPIRATION", "(DAYS)", "CREATED", "ROLES"]
    assert lines[1].split()[:3] == ["debusine/System", "yes", "never"]
    assert lines[1].endswith("contributor: devs")
    assert lines[2].split()[:3] == ["debusine/alpha", "no", "never"]
    assert lines[2].endswith(" -")


def test_list_workspaces_yaml_of_one_scope(
    playground: Playground, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    other = Scope.objects.create(name="other")
    for index in range(5):
        workspace = playground.create_workspace(f"ws{index}", scope=other)
        workspace.grant_role(playground.create_group(f"g{index}", scope=other), "viewer")

    # The scope, the workspaces, their roles (plus the command's savepoint and its release):
    # the same for 5 workspaces as for 500.
    with django_assert_max_num_queries(5):
        listed = yaml.safe_load(run("workspace", "list", "other", "--yaml"))

    assert [item["name"] for item in listed] == [f"ws{index}" for index in range(5)]
    assert listed[0]["scope"] == "other"
    assert listed[0]["public"] is False
    assert listed[0]["roles"] == {"viewer": ["g0"]}
    assert listed[0]["created_at"].endswith("Z")


def test_list_workspaces_of_unknown_scope_fails(db: None) -> None:
    assert run_fails("workspace", "list", "nope") == "scope 'nope' does not exist"


def test_grant_and_revoke_roles(playground: Playground) -> None:
    playground.create_group("devs")
    playground.create_group("qa")

    out = run("workspace", "grant_role", "debusine/System", "contributor", "devs", "qa")

    assert out == (
        "Granted contributor on debusine/System to group devs\n"
        "Granted contributor on debusine/System to group qa\n"
    )
    assert set(
        playground.workspace.roles.filter(role="contributor").values_list("group__name", flat=True)
    ) == {"devs", "qa"}
    # Granting twice is harmless.
    run("workspace", "grant_role", "System", "contributor", "devs")
    assert playground.workspace.roles.count() == 2

    out = run("workspace", "revoke_role", "System", "contributor", "devs")
    assert out == "Revoked contributor on debusine/System from group devs\n"
    out = run("workspace", "revoke_role", "System", "contributor", "devs")
    assert out == "Group devs did not have contributor on debusine/System\n"
    assert list(playground.workspace.roles.values_list("group__name", flat=True)) == ["qa"]


def test_grant_role_errors_change_nothing(playground: Playground) -> None:
    playground.create_group("devs")
    Scope.objects.create(name="other")
    Group.objects.create(scope=Scope.objects.get(name="other"), name="strangers")

    assert run_fails("workspace", "grant_role", "System", "admin", "devs") == (
        "unknown role 'admin': expected one of owner, contributor, viewer"
    )
    # Groups of another scope are not found: roles stay within a scope.
    assert run_fails("workspace", "grant_role", "System", "viewer", "devs", "strangers") == (
        "group 'strangers' does not exist in scope 'debusine'"
    )
    assert run_fails("workspace", "revoke_role", "nope", "viewer", "devs") == (
        "workspace 'nope' does not exist in scope 'debusine'"
    )
    assert not playground.workspace.roles.exists()
    run_usage_error("workspace", "grant_role", "System", "viewer")
