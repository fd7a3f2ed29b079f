"""
What every `debusine-admin` command shares: the command base classes, output and input helpers.

Conventions kept here so that each command module stays a thin layer over model methods:

- a command runs in one database transaction: an error anywhere changes nothing;
- an error the operator can fix (unknown name, duplicate, invalid value) is one line on stderr
  and exit code 3 (`fail`); argparse keeps exit code 2 for malformed command lines;
- list output is an aligned table for humans, or YAML (`--yaml`) for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, NoReturn

import yaml
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction
from django.db.models import Model

from debusine.protocol.wire import iso_datetime
from debusine.server.db.errors import first_line
from debusine.server.db.models import Group, Scope, Token, User, Worker, Workspace

#: Exit code of a command that understood its arguments but could not do what they ask.
EXIT_BAD_INPUT = 3


def fail(message: str) -> NoReturn:
    """Stop the command: `message` goes to stderr (one line) and the exit code is 3."""
    raise CommandError(" ".join(message.split()), returncode=EXIT_BAD_INPUT)


def validation_message(error: ValidationError) -> str:
    """One line out of a Django ValidationError, naming the fields at fault."""
    if hasattr(error, "error_dict"):
        return "; ".join(
            (f"{field}: " if field != NON_FIELD_ERRORS else "")
            + " ".join(str(message) for message in messages)
            for field, messages in error.message_dict.items()
        )
    return " ".join(error.messages)


def save_validated(instance: Model) -> None:
    """
    Validate `instance` (fields, `clean()`, uniqueness), then save it.

    Database constraints are left to the database: each model's `clean()` and the commands'
    own checks say the same in words an operator understands, and Django's generic
    "Constraint ... is violated" would only repeat them.
    """
    instance.full_clean(validate_constraints=False)
    instance.save()


class AdminCommand(BaseCommand):
    """
    Base of every debusine-admin command: `run()` in one transaction, errors as exit code 3.

    System checks are not run before each command: `debusine-admin check` does that, and an
    operator must be able to run `instance show` or fix data on a misconfigured instance.
    """

    requires_system_checks: list[str] = []
    # Tests pass `stdin=` to call_command, as with Django's own interactive commands.
    stealth_options = ("stdin",)

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdin: IO[str] = options.pop("stdin", None) or sys.stdin
        in_transaction = self.runs_in_one_transaction(options)
        try:
            with transaction.atomic() if in_transaction else contextlib.nullcontext():
                self.run(**options)
        except ValidationError as error:
            fail(validation_message(error))
        except IntegrityError as error:
            # Pre-checks give the friendly messages; this catches what raced past them.
            fail(f"the database refused the change: {first_line(error)}")

    def runs_in_one_transaction(self, options: Mapping[str, Any]) -> bool:
        """Whether `run` goes in one transaction (the rule); a long pass may commit in steps."""
        return True

    #: Does the work of the command, inside the transaction, with the parsed options as
    #: keyword arguments (each command declares the ones it uses).
    run: Callable[..., None]

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question on stdout; only `y` or `yes` on stdin is a yes."""
        self.stdout.write(question, ending="")
        self.stdout.flush()
        answer = self.stdin.readline()
        return answer.strip().lower() in ("y", "yes")

    def write(self, text: str = "") -> None:
        """Write a line to stdout."""
        self.stdout.write(text)

    def write_table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.stdout.write(format_table(headers, rows), ending="")

    def write_yaml(self, data: Any) -> None:
        self.stdout.write(dump_yaml(data), ending="")


Verb = Callable[..., None]


class NounCommand(AdminCommand):
    """
    A command named after a noun whose verbs are argparse subcommands (`worker enable NAME`).

    Subclasses implement `add_verbs(verbs)`, adding one parser per verb with `add_verb`, and
    one method `verb_<name>(**options)` per verb.

    A subclass that sets `alias_verb` is the old one-word spelling of one verb (`create_token`
    for `token create`): the verb's arguments go on the command's own parser and the verb runs
    with them, so that scripts written for the old spelling keep working unchanged (same
    arguments, output and exit codes). Its --help names the command to use instead.
    """

    #: Set in an alias module: the verb this command is the old spelling of.
    alias_verb: str | None = None

    #: Verbs that manage their own transactions (see `runs_in_one_transaction`).
    verbs_without_command_transaction: frozenset[str] = frozenset()

    def runs_in_one_transaction(self, options: Mapping[str, Any]) -> bool:
        return options["verb"] not in self.verbs_without_command_transaction

    def add_arguments(self, parser: CommandParser) -> None:
        if self.alias_verb is None:
            verbs = parser.add_subparsers(
                dest="verb", required=True, metavar="VERB", title="verbs (VERB --help for more)"
            )
        else:
            self.alias_parser = parser
            parser.set_defaults(verb=self.alias_verb)
            # The other verbs' parsers are built as usual, then thrown away.
            verbs = CommandParser().add_subparsers()
        self.add_verbs(verbs)

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        raise NotImplementedError

    @classmethod
    def noun(cls) -> str:
        """The command name of the noun: the module defining `add_verbs` (`token`)."""
        defining = next(klass for klass in cls.__mro__ if "add_verbs" in vars(klass))
        return defining.__module__.rpartition(".")[2]

    def add_verb(
        self, verbs: argparse._SubParsersAction[CommandParser], name: str, help_text: str
    ) -> CommandParser:
        """Add the parser of one verb; its help shows in the noun's --help."""
        if name == self.alias_verb:
            self.alias_parser.description = (
                f"Old spelling of `debusine-admin {self.noun()} {name}`, kept for existing "
                f"scripts: use that command instead. {help_text}"
            )
            return self.alias_parser
        return verbs.add_parser(name, help=help_text, description=help_text)

    def run(self, **options: Any) -> None:
        verb: Verb = getattr(self, f"verb_{options['verb']}")
        verb(**options)


# --- Output ---------------------------------------------------------------------------------


def format_cell(value: Any) -> str:
    """How a value reads in a table: empty for None, ISO dates, yes/no for booleans."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An aligned plain-text table: a header line, then one line per row."""
    lines = [[format_cell(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for line in lines:
        widths = [max(width, len(cell)) for width, cell in zip(widths, line, strict=True)]
    text = []
    for cells in [list(headers), *lines]:
        text.append(
            "  ".join(
                cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
            ).rstrip()
        )
    return "\n".join(text) + "\n"


def plain(value: Any) -> Any:
    """`value` with datetimes as ISO 8601 UTC strings and durations as seconds, for YAML."""
    if isinstance(value, datetime):
        return iso_datetime(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def dump_yaml(data: Any) -> str:
    """YAML that `yaml.safe_load` reads back as the same plain data."""
    return yaml.safe_dump(plain(data), sort_keys=False, default_flow_style=False)


def add_yaml_option(parser: CommandParser) -> None:
    parser.add_argument(
        "--yaml", action="store_true", help="print YAML (for scripts) instead of a table"
    )


# --- Input ----------------------------------------------------------------------------------


def read_yaml(source: str, stdin: IO[str] | None = None) -> Any:
    """Parse YAML from the file `source`, or from stdin when `source` is `-`."""
    try:
        text = (stdin or sys.stdin).read() if source == "-" else Path(source).read_text()
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {source}: {error}")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        fail(f"invalid YAML in {source}: {' '.join(str(error).split())}")


def read_json_mapping(
    source: str, stdin: IO[str] | None = None, label: str | None = None
) -> dict[str, Any]:
    """
    Like `read_yaml`, but the document must be a mapping of plain JSON data (string keys, no
    dates or sets), as every model field it goes into is JSON. An empty document is `{}`.

    `label` names the input in error messages (default: `source`).
    """
    label = label or source
    data = read_yaml(source, stdin)
    if data is None:
        return {}
    if not isinstance(data, dict):
        fail(f"{label} must contain a YAML mapping, not {type(data).__name__}")
    try:
        same = json.loads(json.dumps(data)) == data
    except (TypeError, ValueError):
        same = False
    if not same:
        fail(f"{label} must hold plain JSON-compatible data (string keys, no dates)")
    return data


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


# --- Lookups: each fails with a message naming what was not found ----------------------------


def get_scope(name: str) -> Scope:
    scope = Scope.objects.filter(name=name).first()
    if scope is None:
        fail(f"scope {name!r} does not exist")
    return scope


def split_scoped_name(spec: str, kind: str) -> tuple[Scope, str]:
    """Split `SCOPE/NAME` (a bare NAME is in the default scope); the scope must exist."""
    scope_name, slash, name = spec.rpartition("/")
    if not slash:
        scope_name = settings.DEBUSINE_DEFAULT_SCOPE
    if not scope_name or not name or "/" in scope_name:
        fail(f"invalid {kind} {spec!r}: expected SCOPE/NAME or NAME")
    return get_scope(scope_name), name


def get_workspace(spec: str) -> Workspace:
    """The workspace `SCOPE/NAME` (or `NAME` in the default scope)."""
    scope, name = split_scoped_name(spec, "workspace")
    workspace = Workspace.objects.select_related("scope").filter(scope=scope, name=name).first()
    if workspace is None:
        fail(f"workspace {name!r} does not exist in scope {scope.name!r}")
    return workspace


def get_group(scope: Scope, name: str) -> Group:
    group = Group.objects.select_related("scope").filter(scope=scope, name=name).first()
    if group is None:
        fail(f"group {name!r} does not exist in scope {scope.name!r}")
    return group


def get_user(username: str) -> User:
    user = User.objects.filter(username=username).first()
    if user is None:
        fail(f"user {username!r} does not exist")
    return user


def get_users(usernames: Sequence[str]) -> list[User]:
    """The users named, in one query; fails naming every unknown one."""
    users = {user.username: user for user in User.objects.filter(username__in=usernames)}
    unknown = [name for name in usernames if name not in users]
    if unknown:
        fail(f"unknown users: {', '.join(unknown)}")
    return [users[name] for name in dict.fromkeys(usernames)]


def get_worker(name_or_key: str, worker_type: str | None = None) -> Worker:
    """The worker named `name_or_key`, else the one whose token (or activation token) it is."""
    workers = Worker.objects.select_related("token")
    if worker_type is not None:
        workers = workers.filter(worker_type=worker_type)
    worker = workers.filter(name=name_or_key).first()
    if worker is None:
        token = Token.objects.get_by_key(name_or_key)
        if token is not None:
            # A missing reverse one-to-one raises an AttributeError subclass: None here.
            linked = getattr(token, "worker", None) or getattr(token, "activating_worker", None)
            if linked is not None:
                worker = workers.filter(pk=linked.pk).first()
    if worker is None:
        kind = f"{worker_type} worker" if worker_type else "worker"
        fail(f"no {kind} has the name or token {name_or_key!r}")
    return worker


def check_choice(value: str, choices: Sequence[str], kind: str) -> str:
    if value not in choices:
        fail(f"unknown {kind} {value!r}: expected one of {', '.join(choices)}")
    return value
