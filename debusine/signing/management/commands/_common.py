"""What the `debusine-signing` commands share: who is acting, and one-line errors."""

from __future__ import annotations

import getpass

from django.core.management.base import CommandError

#: Exit status of a refused operation or unusable configuration (one-line message).
EXIT_REFUSED = 2


def refused(message: str) -> CommandError:
    """A one-line error with the CLI's exit status for refused operations."""
    return CommandError(message, returncode=EXIT_REFUSED)


def command_actor() -> str:
    """`created_by` of audit rows written by a command run by hand."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
