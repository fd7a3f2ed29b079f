"""
`debusine-admin environment`: create the build environments tasks run in, and list them.

`environment create CODENAME --architecture ARCH` makes an `mmdebstrap` work request whose
system tarball, once built, is filed in the vendor's `debian:environments` collection (created
if missing) by an `update-collection-with-artifacts` reaction; it prints the work request's id.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from debusine.server.collections import CollectionManager, ItemAdditionError
from debusine.server.db.defaults import SYSTEM_USERNAME
from debusine.server.db.models import Artifact, Collection, CollectionItem
from debusine.server.management.base import (
    NounCommand,
    add_yaml_option,
    fail,
    get_user,
    get_workspace,
)
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import InvalidWorkRequestError
from debusine.tasks.mmdebstrap import FALLBACK_MIRROR, default_mirror

ENVIRONMENTS = "debian:environments"


def mmdebstrap_task_data(
    codename: str, architecture: str, variant: str, mirror: str
) -> dict[str, Any]:
    return {
        "bootstrap_options": {"architecture": architecture, "variant": variant},
        "bootstrap_repositories": [{"mirror": mirror, "suite": codename, "components": ["main"]}],
    }


def filing_reaction(vendor: str, codename: str) -> dict[str, Any]:
    """The on_success reaction that files the tarball in `{vendor}@debian:environments`."""
    return {
        "action": "update-collection-with-artifacts",
        "collection": f"{vendor}@{ENVIRONMENTS}",
        "variables": {"codename": codename},
        "artifact_filters": {"category": "debian:system-tarball"},
    }


class Command(NounCommand):
    help = "Manage build environments (debian:environments collections): create, add, list."

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(
            verbs,
            "create",
            "Bootstrap an environment with an mmdebstrap work request (print its id); once it "
            "succeeds, its tarball is filed in VENDOR@debian:environments.",
        )
        create.add_argument("codename", metavar="CODENAME", help="e.g. bookworm")
        create.add_argument("--architecture", required=True, help="e.g. amd64")
        create.add_argument(
            "--variant", default="buildd", help="mmdebstrap variant (default: buildd)"
        )
        create.add_argument(
            "--mirror",
            help="Debian mirror (default: the first one this machine's APT uses, else "
            f"{FALLBACK_MIRROR})",
        )
        create.add_argument("--vendor", default="debian", help="collection name (default: debian)")
        self._add_workspace(create)

        add = self.add_verb(
            verbs,
            "add",
            "File an existing debian:system-tarball artifact (e.g. one imported with the client) "
            "in VENDOR@debian:environments, replacing the environment of the same name.",
        )
        add.add_argument("artifact", metavar="ARTIFACT_ID", type=int, help="the artifact's id")
        add.add_argument("--codename", help="codename to file it under (default: its data's)")
        add.add_argument("--variant", help="what the environment is for (e.g. a task name)")
        add.add_argument("--backend", help="the only backend it suits (default: any)")
        add.add_argument("--vendor", default="debian", help="collection name (default: debian)")
        self._add_workspace(add)

        listing = self.add_verb(verbs, "list", "List the environments of a workspace.")
        listing.add_argument("--vendor", help="only this vendor's collection")
        self._add_workspace(listing)
        listing.add_argument(
            "--all", action="store_true", help="include replaced environments (history)"
        )
        add_yaml_option(listing)

    @staticmethod
    def _add_workspace(parser: CommandParser) -> None:
        parser.add_argument(
            "--workspace",
            metavar="SCOPE/NAME",
            help="workspace (a bare NAME is in the default scope; default: the default workspace)",
        )

    def verb_create(
        self,
        *,
        codename: str,
        architecture: str,
        variant: str,
        mirror: str | None,
        vendor: str,
        workspace: str | None,
        **_: Any,
    ) -> None:
        target = get_workspace(workspace or settings.DEBUSINE_DEFAULT_WORKSPACE)
        Collection.objects.get_or_create(name=vendor, category=ENVIRONMENTS, workspace=target)
        try:
            work_request = transitions.create(
                workspace=target,
                created_by=get_user(SYSTEM_USERNAME),
                task_type="Worker",
                task_name="mmdebstrap",
                task_data=mmdebstrap_task_data(
                    codename, architecture, variant, mirror or default_mirror()
                ),
                event_reactions={"on_success": [filing_reaction(vendor, codename)]},
                allow_server_actions=True,
            )
        except InvalidWorkRequestError as error:
            fail(f"{error.title}: {error.detail}")
        self.write(str(work_request.pk))

    def verb_add(
        self,
        *,
        artifact: int,
        codename: str | None,
        variant: str | None,
        backend: str | None,
        vendor: str,
        workspace: str | None,
        **_: Any,
    ) -> None:
        target = get_workspace(workspace or settings.DEBUSINE_DEFAULT_WORKSPACE)
        tarball = Artifact.objects.filter(pk=artifact, workspace=target).first()
        if tarball is None:
            fail(f"artifact {artifact} does not exist in workspace {target}")
        collection, _created = Collection.objects.get_or_create(
            name=vendor, category=ENVIRONMENTS, workspace=target
        )
        variables = {
            key: value
            for key, value in (("codename", codename), ("variant", variant), ("backend", backend))
            if value
        }
        try:
            item = CollectionManager.for_collection(collection).add_artifact(
                tarball, user=get_user(SYSTEM_USERNAME), variables=variables
            )
        except ItemAdditionError as error:
            fail(str(error))
        self.write(item.name)

    def verb_list(
        self, *, vendor: str | None, workspace: str | None, all: bool, yaml: bool, **_: Any
    ) -> None:
        target = get_workspace(workspace or settings.DEBUSINE_DEFAULT_WORKSPACE)
        items = CollectionItem.objects.filter(
            parent_collection__workspace=target, parent_collection__category=ENVIRONMENTS
        ).select_related("parent_collection")
        if vendor is not None:
            items = items.filter(parent_collection__name=vendor)
        if not all:
            items = items.filter(removed_at__isnull=True)
        rows = list(items.order_by("parent_collection__name", "name", "-created_at"))
        if yaml:
            self.write_yaml(
                [
                    {
                        "vendor": item.parent_collection.name,
                        "name": item.name,
                        "artifact": item.artifact_id,
                        "data": item.data,
                        "created_at": item.created_at,
                        "removed_at": item.removed_at,
                    }
                    for item in rows
                ]
            )
            return
        self.write_table(
            ["VENDOR", "NAME", "ARTIFACT", "CREATED", "REMOVED"],
            [
                [
                    item.parent_collection.name,
                    item.name,
                    item.artifact_id,
                    item.created_at,
                    item.removed_at,
                ]
                for item in rows
            ],
        )
