"""`debusine-signing debsign CHANGES --key FINGERPRINT`: sign an upload by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from debusine.signing.key_store import KeyStoreError, configured_service_keys
from debusine.signing.management.commands._common import command_actor, refused
from debusine.signing.operations import debsign_changes
from debusine.signing.service_keys import ServiceKeyError
from debusine.signing.signers import SigningError


class Command(BaseCommand):
    help = (
        "Sign an upload in place with an OpenPGP key (debsign): the .dsc and .buildinfo the"
        " .changes lists, then the .changes with its checksums fixed. Audited first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("changes", type=Path)
        parser.add_argument("--key", required=True, help="OpenPGP key fingerprint")

    def handle(self, *args: Any, **options: Any) -> None:
        changes: Path = options["changes"]
        if not changes.is_file() or changes.suffix != ".changes":
            raise refused(f"not a .changes file: {changes}")
        try:
            row = debsign_changes(
                options["key"],
                changes.absolute(),
                created_by=command_actor(),
                service_keys=configured_service_keys(),
            )
        except (KeyStoreError, ServiceKeyError, SigningError) as exc:
            raise refused(str(exc)) from exc
        self.stdout.write(f"signed {changes} (audit row {row.pk})")
