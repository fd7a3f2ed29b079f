"""`debusine-admin asset`: signing keys known to the server, and who may sign with them."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandParser

from debusine.server.management.base import (
    NounCommand,
    fail,
    get_group,
    get_workspace,
    split_scoped_name,
)
from debusine.server.signing_keys import grant_signer, register_signing_key, signing_key_asset

PURPOSES = ["openpgp", "uefi"]


class Command(NounCommand):
    help = (
        "Manage assets: record a signing key (generated on a signing worker: see"
        " `debusine-signing key list`) and grant the signer role on it in a workspace."
    )

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(
            verbs,
            "create_signing_key",
            "Record a debusine:signing-key asset (public data only); print its id.",
        )
        create.add_argument("purpose", choices=PURPOSES)
        create.add_argument("fingerprint")
        create.add_argument("--description", default="")
        create.add_argument(
            "--workspace", metavar="SCOPE/NAME", help="owning workspace (default: none)"
        )
        grant = self.add_verb(
            verbs,
            "grant_signer",
            "Let the members of GROUP sign with the key in WORKSPACE (signer role).",
        )
        grant.add_argument("purpose", choices=PURPOSES)
        grant.add_argument("fingerprint")
        grant.add_argument("workspace", metavar="SCOPE/NAME")
        grant.add_argument("group", metavar="SCOPE/NAME")

    def verb_create_signing_key(
        self, *, purpose: str, fingerprint: str, description: str, workspace: str | None, **_: Any
    ) -> None:
        owner = get_workspace(workspace) if workspace else None
        asset = register_signing_key(purpose, fingerprint, description, owner)
        self.write(str(asset.pk))

    def verb_grant_signer(
        self, *, purpose: str, fingerprint: str, workspace: str, group: str, **_: Any
    ) -> None:
        asset = signing_key_asset(purpose, fingerprint)
        if asset is None:
            fail(f"no {purpose} signing key {fingerprint}: record it with create_signing_key")
        grant_signer(
            asset, get_workspace(workspace), get_group(*split_scoped_name(group, "group"))
        )
        self.write(f"{group} may sign with {purpose} key {fingerprint} in {workspace}")
