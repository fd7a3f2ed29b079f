"""
debusine-admin's names: every command is a noun with verbs, or the old spelling of one verb.

The old verb_noun spellings (`create_token` for `token create`) are used by scripts, docs and
Debusine administrators: each must take the same arguments as the verb it stands for, do the
same and fail the same way, and its --help names the new command.
"""

from __future__ import annotations

import argparse
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from debusine.server.db.models import Scope, Token, User, WorkRequest
from debusine.server.management.base import NounCommand
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import FileSpec, Playground

#: Old spelling -> (noun, verb).
ALIASES = {
    "create_token": ("token", "create"),
    "list_tokens": ("token", "list"),
    "delete_tokens": ("token", "delete"),
    "create_user": ("user", "create"),
    "create_work_request": ("work_request", "create"),
    "list_work_requests": ("work_request", "list"),
    "info": ("instance", "show"),
    "delete_expired": ("instance", "delete_expired"),
    "vacuum_storage": ("file_store", "vacuum"),
}

APP = "debusine.server"

REFERENCE = Path(__file__).parents[4] / "docs" / "reference" / "debusine-admin.md"


def test_every_command_is_a_noun_or_an_old_spelling() -> None:
    names = [name for name, app in get_commands().items() if app == APP]
    commands: dict[str, NounCommand] = {}
    for name in names:
        command = load_command_class(APP, name)
        assert isinstance(command, NounCommand), f"{name} is not a noun with verbs"
        commands[name] = command
    aliases = {name for name, command in commands.items() if command.alias_verb is not None}
    assert aliases == set(ALIASES)

    reference = REFERENCE.read_text()
    for name in commands:
        if name in aliases:
            noun, verb = ALIASES[name]
            assert f"| `{name}` | `{noun} {verb}` |" in reference
        else:
            assert f"### `{name} " in reference, f"{name} is not in {REFERENCE.name}"


def argument_signature(parser: argparse.ArgumentParser) -> list[tuple[Any, ...]]:
    """What a parser accepts, without the options every Django command has."""
    common = {action.dest for action in BaseCommand().create_parser("x", "y")._actions}
    return [
        (
            action.dest,
            tuple(action.option_strings),
            action.nargs,
            action.choices,
            action.default,
            action.required,
            action.type,
            action.metavar,
        )
        for action in parser._actions
        if action.dest not in common or action.dest == "verb"
    ]


def verb_parser(noun: str, verb: str) -> argparse.ArgumentParser:
    parser = load_command_class(APP, noun).create_parser("debusine-admin", noun)
    subparsers = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    verb_parser: argparse.ArgumentParser = subparsers.choices[verb]
    return verb_parser


@pytest.mark.parametrize(("old", "new"), ALIASES.items())
def test_alias_takes_the_verbs_arguments_and_names_it(old: str, new: tuple[str, str]) -> None:
    noun, verb = new
    command = load_command_class(APP, old)
    assert isinstance(command, NounCommand)
    assert command.alias_verb == verb
    alias_parser = command.create_parser("debusine-admin", old)

    expected = verb_parser(noun, verb)
    # The alias parser also holds the verb as a default; the verb's own parser does not.
    assert alias_parser.get_default("verb") == verb
    assert [item for item in argument_signature(alias_parser) if item[0] != "verb"] == (
        argument_signature(expected)
    )
    assert alias_parser.description is not None
    assert alias_parser.description.startswith(
        f"Old spelling of `debusine-admin {noun} {verb}`, kept for existing scripts: use that "
        "command instead. "
    )
    assert alias_parser.description.endswith(str(expected.description))


def test_token_aliases_behave_as_token(playground: Playground) -> None:
    carol = playground.create_user("carol")
    playground.create_worker("builder")

    key = run("create_token", "carol", "--comment", "laptop").strip()
    token = Token.objects.get_by_key(key)
    assert token is not None
    assert (token.user, token.enabled, token.comment) == (carol, True, "laptop")
    assert run_fails("create_token", "ghost") == run_fails("token", "create", "ghost")

    assert run("list_tokens") == run("token", "list")
    assert run("list_tokens", "--username", "carol", "--yaml") == (
        run("token", "list", "--username", "carol", "--yaml")
    )
    owners = [item["owner"] for item in yaml.safe_load(run("list_tokens", "--yaml"))]
    assert owners == ["worker:builder", "carol"]

    assert run_fails("delete_tokens", stdin="n\n") == run_fails("token", "delete", stdin="n\n")
    run_usage_error("delete_tokens", "--username", "a", "--token", "b")
    assert run("delete_tokens", "--token", key, stdin="y\n") == (
        "Delete 1 token(s)? [y/N] Deleted 1 token(s)\n"
    )
    assert Token.objects.get_by_key(key) is None
    assert run("delete_tokens", "--yes") == run("token", "delete", "--yes")


def test_create_user_alias_behaves_as_user_create(db: None) -> None:
    password = run("create_user", "carol", "carol@example.org").strip()

    assert User.objects.get(username="carol").check_password(password)
    assert run_fails("create_user", "carol", "c@example.org") == (
        run_fails("user", "create", "carol", "c@example.org")
    )
    run_usage_error("create_user", "dave")


def test_work_request_aliases_behave_as_work_request(playground: Playground) -> None:
    out = run("create_work_request", "Worker", "sleep", "--data", "-", stdin="seconds: 5\n")

    work_request = WorkRequest.objects.get(pk=int(out))
    assert (work_request.task_name, work_request.task_data) == ("sleep", {"seconds": 5})
    assert run_fails("create_work_request", "Nonsense", "noop") == (
        run_fails("work_request", "create", "Nonsense", "noop")
    )
    run_usage_error("create_work_request", "Worker")

    assert run("list_work_requests", "--limit", "1") == run("work_request", "list", "--limit", "1")
    assert run("list_work_requests", "--yaml") == run("work_request", "list", "--yaml")
    run_usage_error("list_work_requests", "--status", "sleeping")


def test_info_alias_behaves_as_instance_show(db: None) -> None:
    assert "Store directory:" in run("info")
    assert run("info") == run("instance", "show")
    assert run("info", "--yaml") == run("instance", "show", "--yaml")


def test_delete_expired_alias_behaves_as_instance_delete_expired(playground: Playground) -> None:
    expired = playground.create_work_request(
        created_by=playground.create_user("carol"),
        created_at=timezone.now() - timedelta(days=3),
        expiration_delay=timedelta(days=2),
    )

    planned = run("delete_expired", "--dry-run")
    assert planned == run("instance", "delete_expired", "--dry-run")
    assert f"Would have: Deleted work request {expired.pk}\n" in planned
    assert WorkRequest.objects.filter(pk=expired.pk).exists()

    assert run("delete_expired").endswith("1 deletion(s)\n")
    assert not WorkRequest.objects.filter(pk=expired.pk).exists()


def vacuum(*args: str) -> tuple[int, str, str]:
    """Run a vacuum command: exit code, stdout, stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=stdout, stderr=stderr)
    except CommandError as error:
        return error.returncode, stdout.getvalue(), stderr.getvalue()
    return 0, stdout.getvalue(), stderr.getvalue()


def test_vacuum_storage_alias_behaves_as_file_store_vacuum(
    playground: Playground, file_directories: Path
) -> None:
    assert vacuum("vacuum_storage") == vacuum("file_store", "vacuum")
    assert vacuum("vacuum_storage")[:2] == (0, "0 action(s), 0 problem(s)\n")

    # A store to drain with no store to drain to: a problem remains, exit code 1.
    scope = Scope.objects.create(name="lonely")
    workspace = playground.create_workspace(scope=scope, name="ws")
    only = playground.create_file_store("only", scope=scope, drain=True)
    playground.create_artifact(files=[FileSpec("f", b"stuck")], complete=True, workspace=workspace)
    playground.store_contents(b"stuck", only)

    code, out, _ = vacuum("vacuum_storage", "--dry-run")
    assert code == 1
    assert "Problem: Scope lonely: no store can take" in out
    assert vacuum("vacuum_storage", "--dry-run") == vacuum("file_store", "vacuum", "--dry-run")
    assert vacuum("vacuum_storage")[0] == vacuum("file_store", "vacuum")[0] == 1
