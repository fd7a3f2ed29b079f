"""
Entry point of the `debusine-signing` command: Django's management commands with the signing
service's settings, and only those.

`DJANGO_SETTINGS_MODULE` is forced, not defaulted: a shell (or a test) that exported the
server's settings module must still get the signing database here, never the server's.
"""

from __future__ import annotations

import os
import sys

from debusine.server.project.settings_loader import SettingsError

#: Exit status for a configuration error (bad setting, unusable service key).
EXIT_CONFIGURATION_ERROR = 2
SETTINGS_MODULE = "debusine.signing.settings"


def main(argv: list[str] | None = None) -> None:
    """Run a management command against the signing database."""
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(["debusine-signing", *(sys.argv[1:] if argv is None else argv)])
    except SettingsError as exc:
        print(f"debusine-signing: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIGURATION_ERROR)


if __name__ == "__main__":
    main()
