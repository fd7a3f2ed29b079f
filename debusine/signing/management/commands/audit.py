"""`debusine-signing audit show|verify`: read the audit log and check its hash chain."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from debusine.signing.audit_chain import chain_problems
from debusine.signing.management.commands._common import refused
from debusine.signing.models import AuditLog


class Command(BaseCommand):
    help = "Show the audit log of key uses, or verify that no row was edited or removed."

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
        show = verbs.add_parser("show", help="print the audit log, one JSON object per line")
        show.add_argument("--fingerprint", help="only the rows of this key")
        verbs.add_parser("verify", help="check the hash chain; exit 2 and list what is wrong")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = AuditLog.objects.order_by("id")
        if options["verb"] == "show":
            if options.get("fingerprint"):
                rows = rows.filter(fingerprint=options["fingerprint"])
            for row in rows.iterator():
                entry = {"id": row.pk, **row.chained_content(), "row_hash": row.row_hash}
                self.stdout.write(json.dumps(entry, sort_keys=True))
            return
        count = 0

        def counted() -> Any:
            nonlocal count
            for row in rows.iterator():
                count += 1
                yield row.as_chained_row()

        problems = chain_problems(counted())
        if problems:
            for problem in problems:
                self.stderr.write(problem)
            raise refused(f"audit log is inconsistent: {len(problems)} problem(s)")
        self.stdout.write(f"audit log verified: {count} row(s), chain intact")
