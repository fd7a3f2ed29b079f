"""`debusine-signing sign PURPOSE FILE --key FINGERPRINT ... --mode MODE --output OUTPUT`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from debusine.signing.key_store import KeyStoreError, configured_service_keys
from debusine.signing.management.commands._common import command_actor, refused
from debusine.signing.models import KeyPurpose
from debusine.signing.operations import sign_file
from debusine.signing.service_keys import ServiceKeyError
from debusine.signing.signers import SigningError, SigningMode


class Command(BaseCommand):
    help = (
        "Sign FILE into OUTPUT with stored keys, by hand (the signing worker does the same for"
        " work requests). uefi: attached or detached, one key; openpgp: detached or clear, one"
        " signature per --key. Every signature is audited before OUTPUT appears."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("purpose", choices=[purpose.value for purpose in KeyPurpose])
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--key", dest="keys", action="append", required=True, help="key fingerprint"
        )
        parser.add_argument("--mode", choices=[mode.value for mode in SigningMode], required=True)
        parser.add_argument("--output", type=Path, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["file"].is_file():
            raise refused(f"no such file: {options['file']}")
        try:
            service_keys = configured_service_keys()
            rows = sign_file(
                KeyPurpose(options["purpose"]),
                options["keys"],
                options["file"],
                options["output"],
                SigningMode(options["mode"]),
                created_by=command_actor(),
                service_keys=service_keys,
            )
        except (KeyStoreError, ServiceKeyError, SigningError) as exc:
            raise refused(str(exc)) from exc
        self.stdout.write(
            f"signed {options['output']} (audit rows {', '.join(str(r.pk) for r in rows)})"
        )
