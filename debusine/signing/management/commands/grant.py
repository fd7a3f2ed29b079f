"""`debusine-signing grant add|remove|list`: which workspace may use which key, signing side."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from debusine.signing.key_store import KeyStoreError, grant_key, revoke_key
from debusine.signing.management.commands._common import command_actor, refused
from debusine.signing.models import KeyGrant, KeyPurpose

PURPOSES = [purpose.value for purpose in KeyPurpose]


class Command(BaseCommand):
    help = (
        "Manage the signing side's grants: the signing worker signs for a workspace only with"
        " the keys granted to it here, whatever the server says (the server's signer role is"
        " checked too). generatekey grants the new key to the workspace that asked for it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
        for verb, text in (
            ("add", "let WORKSPACE use the key (audited)"),
            ("remove", "stop WORKSPACE using the key (audited)"),
        ):
            command = verbs.add_parser(verb, help=text)
            command.add_argument("purpose", choices=PURPOSES)
            command.add_argument("fingerprint")
            command.add_argument("workspace", help="the workspace's name")
        listing = verbs.add_parser("list", help="list grants: purpose, fingerprint, workspace")
        listing.add_argument("--fingerprint", help="only the grants of this key")

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options["verb"]
        if verb == "list":
            grants = KeyGrant.objects.order_by("purpose", "fingerprint", "workspace")
            if options.get("fingerprint"):
                grants = grants.filter(fingerprint=options["fingerprint"])
            for grant in grants:
                self.stdout.write(f"{grant.purpose}\t{grant.fingerprint}\t{grant.workspace}")
            return
        purpose = KeyPurpose(options["purpose"])
        try:
            if verb == "add":
                grant_key(
                    purpose,
                    options["fingerprint"],
                    options["workspace"],
                    created_by=command_actor(),
                )
            else:
                revoke_key(
                    purpose,
                    options["fingerprint"],
                    options["workspace"],
                    created_by=command_actor(),
                )
        except KeyStoreError as exc:
            raise refused(str(exc)) from exc
