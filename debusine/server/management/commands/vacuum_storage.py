"""
`debusine-admin vacuum_storage [--dry-run]`: clean and rebalance the file stores.

See `debusine.server.file_stores.vacuum` for what a pass does. Progress goes to stderr, what
was done to stdout; the exit code is 1 when problems remain that an operator must look at
(contents missing from every store, files no store can take), 0 otherwise.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from debusine.server.file_stores.vacuum import StorageVacuum
from debusine.server.management.base import AdminCommand

#: Exit code when the pass finished but problems remain.
EXIT_PROBLEMS_REMAIN = 1


class Command(AdminCommand):
    help = (
        "Delete files the database does not know of (older than a day), incomplete artifacts "
        "and stale partial uploads; apply the populate, drain and size-limit policies; report "
        "files whose contents are missing. Exit code 1 when problems remain."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would be done, change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # No command-wide transaction: each step commits on its own, so that the contents of
        # forgotten files are deleted as the pass goes, and a late failure undoes nothing.
        vacuum = StorageVacuum(
            dry_run=options["dry_run"], progress=lambda message: self.stderr.write(message)
        )
        report = vacuum.run()
        for action in report.actions:
            self.stdout.write(action)
        for note in report.notes:
            self.stdout.write(f"Note: {note}")
        for problem in report.problems:
            self.stdout.write(f"Problem: {problem}")
        summary = (
            f"{len(report.actions)} action(s){' planned' if options['dry_run'] else ''}, "
            f"{len(report.problems)} problem(s)"
        )
        if report.problems:
            raise CommandError(summary, returncode=EXIT_PROBLEMS_REMAIN)
        self.stdout.write(summary)
