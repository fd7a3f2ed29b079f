"""`debusine-signing key generate|list|disable`: the signing keys of this database."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from debusine.signing.key_store import (
    KeyStoreError,
    configured_service_keys,
    disable_key,
    generate_key,
    set_openpgp_expiry,
)
from debusine.signing.keys import KeyGenerationError
from debusine.signing.management.commands._common import command_actor, refused
from debusine.signing.models import Key, KeyPurpose
from debusine.signing.service_keys import ServiceKeyError

PURPOSES = [purpose.value for purpose in KeyPurpose]


class Command(BaseCommand):
    help = (
        "Manage signing keys: generate (software keys, sealed; or uefi and kmod keys inside a"
        " PKCS#11 token), list, set an OpenPGP key's expiry, disable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
        generate = verbs.add_parser(
            "generate",
            help=(
                "generate a key (software, sealed to the service key; or in a PKCS#11 token);"
                " print its fingerprint"
            ),
        )
        generate.add_argument("purpose", choices=PURPOSES)
        generate.add_argument("description", help="OpenPGP user ID or certificate common name")
        generate.add_argument(
            "--pkcs11-token",
            metavar="URI",
            help=(
                "uefi and kmod: generate the key inside this PKCS#11 token (e.g."
                " pkcs11:token=signing?pin-source=file:/etc/debusine/signing/pin), never"
                " extractable (default: DEBUSINE_SIGNING_PKCS11_GENERATE_TOKEN; empty: software)"
            ),
        )
        listing = verbs.add_parser("list", help="list keys")
        listing.add_argument("--json", action="store_true", help="one JSON object per line")
        expiry = verbs.add_parser(
            "set_expiry", help="set or extend an OpenPGP key's expiry (never, 2y, a date)"
        )
        expiry.add_argument("fingerprint")
        expiry.add_argument("expiry")
        disable = verbs.add_parser("disable", help="refuse a key for new work (kept for audit)")
        disable.add_argument("purpose", choices=PURPOSES)
        disable.add_argument("fingerprint")

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options["verb"]
        try:
            if verb == "generate":
                self.generate(
                    KeyPurpose(options["purpose"]),
                    options["description"],
                    options["pkcs11_token"],
                )
            elif verb == "set_expiry":
                key = set_openpgp_expiry(
                    options["fingerprint"],
                    options["expiry"],
                    created_by=command_actor(),
                    service_keys=configured_service_keys(),
                )
                expires = key.expires_at.isoformat() if key.expires_at else "never"
                self.stdout.write(f"{key.fingerprint} expires {expires}")
            elif verb == "list":
                self.list_keys(as_json=options["json"])
            else:
                disable_key(
                    KeyPurpose(options["purpose"]),
                    options["fingerprint"],
                    created_by=command_actor(),
                )
        except (KeyStoreError, ServiceKeyError, KeyGenerationError) as exc:
            raise refused(str(exc)) from exc

    def generate(self, purpose: KeyPurpose, description: str, pkcs11_token: str | None) -> None:
        if pkcs11_token and not purpose.is_x509:
            raise refused(f"{purpose} keys cannot be generated in a PKCS#11 token")
        service_keys = configured_service_keys()  # refused before any work if unusable
        key = generate_key(
            purpose,
            description,
            created_by=command_actor(),
            service_keys=service_keys,
            pkcs11_token=pkcs11_token,
        )
        self.stdout.write(key.fingerprint)

    def list_keys(self, *, as_json: bool) -> None:
        for key in Key.objects.order_by("purpose", "created_at"):
            entry = {
                "purpose": key.purpose,
                "fingerprint": key.fingerprint,
                "storage": key.storage,
                "description": key.description,
                "created_at": key.created_at.isoformat(),
                "expires_at": key.expires_at.isoformat() if key.expires_at else None,
                "disabled": key.disabled_at is not None,
            }
            if as_json:
                self.stdout.write(json.dumps(entry, sort_keys=True))
            else:
                state = "disabled" if entry["disabled"] else "enabled"
                self.stdout.write(
                    f"{key.purpose}\t{key.fingerprint}\t{key.storage}\t{state}\t{key.description}"
                )
