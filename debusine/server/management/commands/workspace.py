"""`debusine-admin workspace`: create and list workspaces, grant and revoke roles on them."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from django.core.management.base import CommandParser
from django.db.models import Prefetch

from debusine.server.db.models import (
    Group,
    Workspace,
    WorkspaceRole,
    WorkspaceRoles,
)
from debusine.server.management.base import (
    NounCommand,
    add_yaml_option,
    check_choice,
    fail,
    get_group,
    get_scope,
    get_workspace,
    non_negative_int,
    save_validated,
    split_scoped_name,
)


class Command(NounCommand):
    help = "Manage workspaces: create, list, grant_role, revoke_role."

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(verbs, "create", "Create a workspace.")
        create.add_argument(
            "workspace", metavar="SCOPE/NAME", help="a bare NAME is in the default scope"
        )
        visibility = create.add_mutually_exclusive_group()
        visibility.add_argument(
            "--public",
            dest="public",
            action="store_true",
            default=False,
            help="anyone may see the workspace and its contents",
        )
        visibility.add_argument(
            "--private",
            dest="public",
            action="store_false",
            help="only holders of a role see it (the default)",
        )
        create.add_argument(
            "--default-expiration-delay",
            type=non_negative_int,
            default=0,
            metavar="DAYS",
            help="keep artifacts and work requests this many days by default (0: forever)",
        )
        create.add_argument(
            "--with-owners-group",
            metavar="GROUP",
            help="grant the owner role to this group of the scope (created if missing)",
        )

        listing = self.add_verb(verbs, "list", "List workspaces, of one scope or of all.")
        listing.add_argument("scope", metavar="SCOPE", nargs="?", help="only this scope")
        add_yaml_option(listing)

        for verb, action in (("grant_role", "Grant"), ("revoke_role", "Revoke")):
            parser = self.add_verb(
                verbs, verb, f"{action} a role on a workspace to groups of its scope."
            )
            parser.add_argument("workspace", metavar="SCOPE/NAME")
            parser.add_argument("role", metavar="ROLE", help="owner, contributor or viewer")
            parser.add_argument("groups", metavar="GROUP", nargs="+", help="group names")

    def verb_create(
        self,
        *,
        workspace: str,
        public: bool,
        default_expiration_delay: int,
        with_owners_group: str | None,
        **_: Any,
    ) -> None:
        scope, name = split_scoped_name(workspace, "workspace")
        if Workspace.objects.filter(scope=scope, name=name).exists():
            fail(f"workspace {name!r} already exists in scope {scope.name!r}")
        new = Workspace(
            scope=scope,
            name=name,
            public=public,
            default_expiration_delay=timedelta(days=default_expiration_delay),
        )
        save_validated(new)
        if with_owners_group is not None:
            group = Group.objects.filter(scope=scope, name=with_owners_group).first()
            if group is None:
                group = Group(scope=scope, name=with_owners_group)
                save_validated(group)
            new.grant_role(group, WorkspaceRoles.OWNER)
        self.write(f"Created workspace {new}")

    def verb_list(self, *, scope: str | None, yaml: bool, **_: Any) -> None:
        workspaces = Workspace.objects.select_related("scope").order_by("scope__name", "name")
        if scope is not None:
            workspaces = workspaces.filter(scope=get_scope(scope))
        # Roles come in one extra query, whatever the number of workspaces.
        workspaces = workspaces.prefetch_related(
            Prefetch(
                "roles",
                queryset=WorkspaceRole.objects.select_related("group").order_by(
                    "role", "group__name"
                ),
            )
        )
        rows: list[dict[str, Any]] = []
        for item in workspaces:
            roles: dict[str, list[str]] = {}
            for grant in item.roles.all():
                roles.setdefault(grant.role, []).append(grant.group.name)
            rows.append(
                {
                    "scope": item.scope.name,
                    "name": item.name,
                    "public": item.public,
                    "default_expiration_delay_days": item.default_expiration_delay.days,
                    "created_at": item.created_at,
                    "roles": roles,
                }
            )
        if yaml:
            self.write_yaml(rows)
            return
        self.write_table(
            ["WORKSPACE", "PUBLIC", "EXPIRATION (DAYS)", "CREATED", "ROLES"],
            [
                [
                    f"{row['scope']}/{row['name']}",
                    row["public"],
                    row["default_expiration_delay_days"] or "never",
                    row["created_at"],
                    "; ".join(
                        f"{role}: {', '.join(groups)}" for role, groups in row["roles"].items()
                    )
                    or "-",
                ]
                for row in rows
            ],
        )

    def _workspace_role_groups(
        self, workspace: str, role: str, groups: list[str]
    ) -> tuple[Workspace, list[Group]]:
        target = get_workspace(workspace)
        check_choice(role, WorkspaceRoles.values, "role")
        return target, [get_group(target.scope, name) for name in dict.fromkeys(groups)]

    def verb_grant_role(self, *, workspace: str, role: str, groups: list[str], **_: Any) -> None:
        target, found = self._workspace_role_groups(workspace, role, groups)
        for group in found:
            target.grant_role(group, role)
            self.write(f"Granted {role} on {target} to group {group.name}")

    def verb_revoke_role(self, *, workspace: str, role: str, groups: list[str], **_: Any) -> None:
        target, found = self._workspace_role_groups(workspace, role, groups)
        for group in found:
            if target.revoke_role(group, role):
                self.write(f"Revoked {role} on {target} from group {group.name}")
            else:
                self.write(f"Group {group.name} did not have {role} on {target}")
