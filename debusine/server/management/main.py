"""Entry point of the `debusine-admin` command."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Run a management command with the server's settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["debusine-admin", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
