"""`debusine-signing register_pkcs11_static_key PURPOSE URI CERTIFICATE DESCRIPTION`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from debusine.signing.key_store import KeyStoreError, register_pkcs11_static_key
from debusine.signing.management.commands._common import command_actor, refused
from debusine.signing.models import KeyPurpose


class Command(BaseCommand):
    help = (
        "Register a key held by a PKCS#11 token (an HSM): its PKCS#11 URI (add pin-source= to"
        " read the PIN from a file) and its certificate. Prints the key's fingerprint."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "purpose", choices=[purpose.value for purpose in KeyPurpose if purpose.is_x509]
        )
        parser.add_argument("pkcs11_uri", help="e.g. pkcs11:token=signing;object=uefi-2026")
        parser.add_argument("certificate", type=Path, help="the key's PEM certificate")
        parser.add_argument("description")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            key = register_pkcs11_static_key(
                KeyPurpose(options["purpose"]),
                options["pkcs11_uri"],
                options["certificate"],
                options["description"],
                created_by=command_actor(),
            )
        except KeyStoreError as exc:
            raise refused(str(exc)) from exc
        self.stdout.write(key.fingerprint)
