"""`debusine-admin asset`: signing keys known to the server, and who may sign with them."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import Asset, AssetCategory
from debusine.server.db.worker_pool_specs import PROVIDER_TYPES, SpecificationError, parse_account
from debusine.server.management.base import (
    NounCommand,
    add_yaml_option,
    fail,
    get_group,
    get_workspace,
    read_json_mapping,
    split_scoped_name,
)
from debusine.server.signing_keys import grant_signer, register_signing_key, signing_key_asset

PURPOSES = ["openpgp", "uefi", "kmod"]


class Command(NounCommand):
    help = (
        "Manage assets: record a signing key (generated on a signing worker: see"
        " `debusine-signing key list`) and grant the signer role on it in a workspace; record"
        " cloud provider accounts for worker pools (their credentials are never printed)."
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
        account = self.add_verb(
            verbs,
            "create_cloud_provider_account",
            "Record a debusine:cloud-provider-account asset for worker pools; print its id.",
        )
        account.add_argument("name")
        account.add_argument("provider_type", choices=PROVIDER_TYPES)
        account.add_argument(
            "--configuration",
            metavar="FILE",
            help="YAML mapping: region_name, ec2_endpoint_url, hetzner_endpoint_url",
        )
        account.add_argument(
            "--credentials",
            metavar="FILE",
            help="YAML mapping: access_key_id + secret_access_key (aws), api_token (hetzner)",
        )
        accounts = self.add_verb(
            verbs,
            "list_cloud_provider_accounts",
            "List cloud provider accounts (credentials hidden).",
        )
        add_yaml_option(accounts)

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

    def verb_create_cloud_provider_account(
        self,
        *,
        name: str,
        provider_type: str,
        configuration: str | None,
        credentials: str | None,
        **_: Any,
    ) -> None:
        if Asset.objects.filter(
            category=AssetCategory.CLOUD_PROVIDER_ACCOUNT, data__name=name
        ).exists():
            fail(f"a cloud provider account named {name!r} already exists")
        data = {
            "provider_type": provider_type,
            "name": name,
            "configuration": (
                read_json_mapping(configuration, self.stdin, "--configuration")
                if configuration
                else {}
            ),
            "credentials": (
                read_json_mapping(credentials, self.stdin, "--credentials") if credentials else {}
            ),
        }
        try:
            account = parse_account(data)
        except SpecificationError as error:
            fail(f"invalid cloud provider account: {error}")
        asset = Asset.objects.create(
            category=AssetCategory.CLOUD_PROVIDER_ACCOUNT, data=account.model_dump(mode="json")
        )
        self.write(str(asset.pk))

    def verb_list_cloud_provider_accounts(self, *, yaml: bool, **_: Any) -> None:
        assets = Asset.objects.filter(category=AssetCategory.CLOUD_PROVIDER_ACCOUNT).order_by("id")
        accounts = [(asset.pk, parse_account(asset.data).redacted()) for asset in assets]
        if yaml:
            self.write_yaml([{"id": pk, **data} for pk, data in accounts])
            return
        self.write_table(
            ["ID", "NAME", "PROVIDER", "CONFIGURATION"],
            [
                [
                    pk,
                    data["name"],
                    data["provider_type"],
                    " ".join(f"{k}={v}" for k, v in data["configuration"].items() if v),
                ]
                for pk, data in accounts
            ],
        )
