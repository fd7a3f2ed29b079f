"""Tests of `debusine-admin scope`."""

from __future__ import annotations

import pytest
import yaml

from debusine.server.db.models import (
    FileStore,
    FileStoreBackend,
    FileStoreInScope,
    Group,
    Scope,
    ScopeRoles,
)
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import Playground


@pytest.fixture
def store(db: None) -> FileStore:
    return FileStore.objects.create(
        name="extra", backend=FileStoreBackend.MEMORY, configuration={"name": "extra"}
    )


def test_create_scope_with_owners_and_default_store(db: None) -> None:
    out = run(
        "scope",
        "create",
        "team",
        "--label",
        "Team",
        "--icon",
        "team.svg",
        "--with-owners-group",
        "Admins",
    )

    assert out == "Created scope team\n"
    scope = Scope.objects.get(name="team")
    assert (scope.label, scope.icon) == ("Team", "team.svg")
    group = Group.objects.get(scope=scope, name="Admins")
    assert scope.roles.filter(group=group, role=ScopeRoles.OWNER).exists()
    assert list(scope.file_stores.values_list("name", flat=True)) == [FileStore.DEFAULT_NAME]


def test_create_scope_without_owners(db: None) -> None:
    run("scope", "create", "bare")

    assert not Group.objects.filter(scope__name="bare").exists()


def test_create_duplicate_scope_fails(db: None) -> None:
    assert run_fails("scope", "create", "debusine") == "scope 'debusine' already exists"


def test_create_scope_with_invalid_name_changes_nothing(db: None) -> None:
    message = run_fails("scope", "create", "1bad/name")

    assert message.startswith("name: ")
    assert not Scope.objects.filter(name="1bad/name").exists()


def test_create_scope_with_invalid_group_name_creates_no_scope(db: None) -> None:
    message = run_fails("scope", "create", "team", "--with-owners-group", "no spaces")

    assert message.startswith("name: ")
    assert not Scope.objects.filter(name="team").exists()


def test_show_scope_table(playground: Playground) -> None:
    playground.create_workspace("private-ws")

    out = run("scope", "show", "debusine")

    assert out.startswith("Scope: debusine\nLabel: Debusine\n")
    assert "System      yes     never" in out
    assert "private-ws  no      never" in out
    assert "Default  Local" in out


def test_show_scope_yaml(playground: Playground, store: FileStore) -> None:
    run("scope", "add_file_store", "debusine", "extra", "--upload-priority", "5", "--populate")

    shown = yaml.safe_load(run("scope", "show", "debusine", "--yaml"))

    assert shown["name"] == "debusine"
    assert shown["owners"] == []
    assert {"name": "System", "public": True, "default_expiration_delay_days": 0} in shown[
        "workspaces"
    ]
    assert [s["name"] for s in shown["file_stores"]] == ["Default", "extra"]
    extra = shown["file_stores"][1]
    assert extra["backend"] == "Memory"
    assert (extra["upload_priority"], extra["populate"], extra["drain"]) == (5, True, False)


def test_show_unknown_scope_fails(db: None) -> None:
    assert run_fails("scope", "show", "nope") == "scope 'nope' does not exist"


def test_add_file_store_with_policies(store: FileStore) -> None:
    out = run(
        "scope",
        "add_file_store",
        "debusine",
        "extra",
        "--upload-priority",
        "10",
        "--download-priority",
        "-1",
        "--drain",
        "--drain-to",
        "Default",
        "--read-only",
        "--soft-max-size",
        "1000",
    )

    assert out == "Scope debusine now uses file store extra\n"
    link = FileStoreInScope.objects.get(scope__name="debusine", file_store=store)
    assert (link.upload_priority, link.download_priority) == (10, -1)
    assert (link.drain, link.drain_to, link.read_only, link.write_only) == (
        True,
        "Default",
        True,
        False,
    )
    assert (link.populate, link.soft_max_size) == (False, 1000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "extra"], "scope 'nope' does not exist"),
        (["debusine", "nope"], "file store 'nope' does not exist"),
        (
            ["debusine", "Default"],
            "scope 'debusine' already uses file store 'Default': use edit_file_store",
        ),
        (
            ["debusine", "extra", "--read-only", "--write-only"],
            "a file store cannot be both read-only and write-only",
        ),
        (["debusine", "extra", "--drain-to", "extra"], "drain_to: a store cannot drain to itself"),
        (
            ["debusine", "extra", "--drain-to", "elsewhere"],
            "drain_to: scope debusine has no file store elsewhere",
        ),
    ],
)
def test_add_file_store_errors(store: FileStore, args: list[str], message: str) -> None:
    assert run_fails("scope", "add_file_store", *args) == message
    assert not FileStoreInScope.objects.filter(file_store=store).exists()


def test_add_file_store_bad_number_is_a_usage_error(store: FileStore) -> None:
    assert "not an integer" in run_usage_error(
        "scope", "add_file_store", "debusine", "extra", "--upload-priority", "high"
    )


def test_store_that_is_not_instance_wide_serves_one_scope(store: FileStore) -> None:
    store.instance_wide = False
    store.save()
    run("scope", "create", "other")
    run("scope", "add_file_store", "other", "extra")

    message = run_fails("scope", "add_file_store", "debusine", "extra")

    assert message == "file store extra is not instance-wide and is already used by another scope"


def test_edit_file_store_changes_only_given_options(store: FileStore) -> None:
    run(
        "scope",
        "add_file_store",
        "debusine",
        "extra",
        "--upload-priority",
        "3",
        "--populate",
        "--soft-max-size",
        "50",
    )

    out = run(
        "scope",
        "edit_file_store",
        "debusine",
        "extra",
        "--no-populate",
        "--download-priority",
        "7",
        "--soft-max-size",
        "none",
    )

    assert out == "Updated file store extra in scope debusine\n"
    link = FileStoreInScope.objects.get(file_store=store)
    assert (link.upload_priority, link.download_priority) == (3, 7)
    assert (link.populate, link.soft_max_size) == (False, None)


def test_edit_file_store_unsets_priority(store: FileStore) -> None:
    run("scope", "add_file_store", "debusine", "extra", "--upload-priority", "3")

    run("scope", "edit_file_store", "debusine", "extra", "--upload-priority", "none")

    assert FileStoreInScope.objects.get(file_store=store).upload_priority is None


def test_edit_file_store_invalid_combination_changes_nothing(store: FileStore) -> None:
    run("scope", "add_file_store", "debusine", "extra", "--read-only")

    message = run_fails("scope", "edit_file_store", "debusine", "extra", "--write-only")

    assert message == "a file store cannot be both read-only and write-only"
    link = FileStoreInScope.objects.get(file_store=store)
    assert (link.read_only, link.write_only) == (True, False)


def test_edit_file_store_not_in_scope_fails(store: FileStore) -> None:
    assert run_fails("scope", "edit_file_store", "debusine", "extra", "--drain") == (
        "scope 'debusine' does not use file store 'extra': use add_file_store"
    )


def test_scope_needs_a_verb(db: None) -> None:
    assert "VERB" in run_usage_error("scope")


def test_remove_file_store_refuses_to_strand_files(playground: Playground) -> None:
    from debusine.server.db.models import FileInStore, FileStoreInScope
    from debusine.testing.playground import FileSpec

    extra = playground.create_file_store("extra")
    playground.create_artifact(files=[FileSpec("f", b"only here")], complete=True)
    file = playground.store_contents(b"only here", extra)

    message = run_fails("scope", "remove_file_store", "debusine", "extra")
    assert "holds 1 file(s) of scope 'debusine'" in message

    FileInStore.objects.create(store=FileStore.objects.get(name="Default"), file=file)
    assert run("scope", "remove_file_store", "debusine", "extra") == (
        "Scope debusine no longer uses file store extra\n"
    )
    assert not FileStoreInScope.objects.filter(file_store=extra).exists()
    assert run_fails("scope", "remove_file_store", "debusine", "extra") == (
        "scope 'debusine' does not use file store 'extra'"
    )
