"""Run debusine-admin commands in-process, the way the command line does, and see the result."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from debusine.server.management.base import EXIT_BAD_INPUT


def run(*args: str, stdin: str | None = None) -> str:
    """Run `debusine-admin ARGS...` and return its stdout."""
    stdout = io.StringIO()
    stdin_stream = io.StringIO(stdin) if stdin is not None else io.StringIO("")
    call_command(*args, stdout=stdout, stdin=stdin_stream)
    return stdout.getvalue()


def run_fails(*args: str, stdin: str | None = None, returncode: int = EXIT_BAD_INPUT) -> str:
    """Run a command that must fail with `returncode`; return its one-line error message."""
    with pytest.raises(CommandError) as failure:
        run(*args, stdin=stdin)
    assert failure.value.returncode == returncode, failure.value
    message = str(failure.value)
    assert "\n" not in message
    return message


def run_usage_error(*args: str) -> str:
    """Run a malformed command line: argparse rejects it (exit code 2 from the shell)."""
    # In-process, Django turns argparse's exit into a CommandError with return code 1.
    return run_fails(*args, returncode=1)
