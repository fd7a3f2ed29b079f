"""
Entry point of the `debusine-admin` command.

On an instance whose database is the embedded PostgreSQL of `make run` (recorded in the data
directory), the command starts that PostgreSQL when it is not running and stops it again when
the command ends, so that `debusine-admin` works whether or not the stack is up.

That is the one hook from production code into the development tooling (`debusine.testing`):
`instance.may_use_embedded_postgres` decides from the data directory's files alone, and only
when it says yes is `debusine.testing.embedded` imported (allowed, with this reason, in
tests/test_layout.py). A production instance never gets there.
"""

from __future__ import annotations

import atexit
import os
import sys

# Exit status when the instance's services cannot be reached or started.
EXIT_SERVICE_UNAVAILABLE = 3


def start_embedded_database() -> None:
    """Start the instance's embedded PostgreSQL for this command, if it uses one that is down."""
    from django.conf import settings

    from debusine.server.project import instance

    data_dir = settings.DEBUSINE_DATA_DIR
    if not instance.may_use_embedded_postgres(data_dir, settings.DEBUSINE_DATABASE_URL):
        return
    # Only a `make run` data directory gets here: the development tooling starts its database.
    from debusine.testing import embedded

    try:
        postgres = embedded.start_postgres_for_command(data_dir, settings.DEBUSINE_DATABASE_URL)
    except embedded.EmbeddedServiceError as exc:
        print(f"debusine-admin: {exc}", file=sys.stderr)
        sys.exit(EXIT_SERVICE_UNAVAILABLE)
    if postgres is None:
        return

    def stop_unless_stack_took_over() -> None:
        # `make run` may have started meanwhile and be using this PostgreSQL: leave it running.
        if not embedded.devstack_is_running(data_dir):
            postgres.stop()

    atexit.register(stop_unless_stack_took_over)


def main(argv: list[str] | None = None) -> None:
    """Run a management command with the server's settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")
    from django.core.management import execute_from_command_line

    start_embedded_database()
    execute_from_command_line(["debusine-admin", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
