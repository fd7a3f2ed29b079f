"""`debusine-admin group`: create groups of a scope and manage their members."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import Group, GroupMembership
from debusine.server.management.base import (
    NounCommand,
    add_yaml_option,
    fail,
    get_group,
    get_scope,
    get_users,
    save_validated,
    split_scoped_name,
)


class Command(NounCommand):
    help = "Manage groups (roles are granted to groups): create, list, members."

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(verbs, "create", "Create a group in a scope.")
        create.add_argument(
            "group", metavar="SCOPE/NAME", help="a bare NAME is in the default scope"
        )
        create.add_argument(
            "--ephemeral",
            action="store_true",
            help="delete the group automatically once no role refers to it",
        )

        listing = self.add_verb(verbs, "list", "List the groups of a scope.")
        listing.add_argument("scope", metavar="SCOPE")
        add_yaml_option(listing)

        members = self.add_verb(
            verbs, "members", "Print the members of a group, after changing them if asked."
        )
        members.add_argument("group", metavar="SCOPE/NAME")
        change = members.add_mutually_exclusive_group()
        change.add_argument(
            "--add", dest="add_users", nargs="+", metavar="USER", help="add these users"
        )
        change.add_argument(
            "--remove", dest="remove_users", nargs="+", metavar="USER", help="remove these users"
        )
        change.add_argument(
            "--set",
            dest="set_users",
            nargs="*",
            metavar="USER",
            help="make these users the exact membership (none: empty the group)",
        )
        add_yaml_option(members)

    def verb_create(self, *, group: str, ephemeral: bool, **_: Any) -> None:
        scope, name = split_scoped_name(group, "group")
        if Group.objects.filter(scope=scope, name=name).exists():
            fail(f"group {name!r} already exists in scope {scope.name!r}")
        new = Group(scope=scope, name=name, ephemeral=ephemeral)
        save_validated(new)
        self.write(f"Created group {new}")

    def verb_list(self, *, scope: str, yaml: bool, **_: Any) -> None:
        groups = list(
            Group.objects.filter(scope=get_scope(scope))
            .order_by("name")
            .values("name", "ephemeral", "created_at")
        )
        if yaml:
            self.write_yaml(groups)
            return
        self.write_table(
            ["NAME", "EPHEMERAL", "CREATED"],
            [[row["name"], row["ephemeral"], row["created_at"]] for row in groups],
        )

    def verb_members(
        self,
        *,
        group: str,
        add_users: list[str] | None,
        remove_users: list[str] | None,
        set_users: list[str] | None,
        yaml: bool,
        **_: Any,
    ) -> None:
        target = get_group(*split_scoped_name(group, "group"))
        if add_users is not None:
            target.add_members(get_users(add_users))
        elif remove_users is not None:
            target.remove_members(get_users(remove_users))
        elif set_users is not None:
            target.set_members(get_users(set_users))
        members = list(
            GroupMembership.objects.filter(group=target)
            .order_by("user__username")
            .values("user__username", "role")
        )
        if yaml:
            self.write_yaml(
                [{"username": row["user__username"], "role": row["role"]} for row in members]
            )
            return
        self.write_table(
            ["USER", "ROLE"], [[row["user__username"], row["role"]] for row in members]
        )
