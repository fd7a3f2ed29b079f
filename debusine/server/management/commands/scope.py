"""`debusine-admin scope`: create scopes, show them, and set how they use file stores."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import (
    File,
    FileInArtifact,
    FileInStore,
    FileStore,
    FileStoreInScope,
    Group,
    Scope,
    ScopeRoles,
    Workspace,
)
from debusine.server.management.base import (
    NounCommand,
    add_yaml_option,
    fail,
    get_scope,
    non_negative_int,
    save_validated,
)

#: argparse default meaning "option not given": distinct from None, which unsets a value.
NOT_GIVEN: Any = object()

#: The policy fields of FileStoreInScope that the add/edit options set.
POLICY_FIELDS = (
    "upload_priority",
    "download_priority",
    "populate",
    "drain",
    "drain_to",
    "read_only",
    "write_only",
    "soft_max_size",
)


def priority_or_none(text: str) -> int | None:
    """argparse type: an integer, or `none` to unset the priority."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or 'none': {text!r}") from None


def size_or_none(text: str) -> int | None:
    """argparse type: a size in bytes (>= 0), or `none` for no limit."""
    return None if text.lower() == "none" else non_negative_int(text)


def store_name_or_none(text: str) -> str | None:
    return None if text.lower() == "none" else text


def add_policy_options(parser: CommandParser, *, editing: bool) -> None:
    """The policy options of `add_file_store`, which `edit_file_store` can also unset."""
    unset = " ('none' unsets it)" if editing else ""
    parser.add_argument(
        "--upload-priority",
        type=priority_or_none,
        default=NOT_GIVEN,
        metavar="N",
        help=f"higher is chosen first for uploads{unset}",
    )
    parser.add_argument(
        "--download-priority",
        type=priority_or_none,
        default=NOT_GIVEN,
        metavar="N",
        help=f"higher is chosen first for downloads{unset}",
    )
    flags = {
        "populate": "copy every file of the scope into this store (file_store vacuum)",
        "drain": "move every file out of this store (file_store vacuum)",
        "read-only": "never add files to this store",
        "write-only": "never serve downloads from this store",
    }
    for flag, help_text in flags.items():
        parser.add_argument(
            f"--{flag}",
            action=argparse.BooleanOptionalAction,
            default=NOT_GIVEN,
            help=help_text + (f" (--no-{flag} turns it off)" if editing else ""),
        )
    parser.add_argument(
        "--drain-to",
        type=store_name_or_none,
        default=NOT_GIVEN,
        metavar="STORE",
        help=f"when draining, move files to this store of the scope{unset}",
    )
    parser.add_argument(
        "--soft-max-size",
        type=size_or_none,
        default=NOT_GIVEN,
        metavar="BYTES",
        help=f"size this scope should keep below in the store{unset}",
    )


def given_policies(options: dict[str, Any]) -> dict[str, Any]:
    return {field: options[field] for field in POLICY_FIELDS if options[field] is not NOT_GIVEN}


def get_file_store(name: str) -> FileStore:
    store = FileStore.objects.filter(name=name).first()
    if store is None:
        fail(f"file store {name!r} does not exist")
    return store


class Command(NounCommand):
    help = "Manage scopes: create, show, add_file_store, edit_file_store, remove_file_store."

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(
            verbs,
            "create",
            "Create a scope. It uses the Default file store until told otherwise.",
        )
        create.add_argument("name", metavar="NAME", help="scope name (appears in URLs)")
        create.add_argument("--label", default="", help="human-readable name")
        create.add_argument("--icon", default="", help="path or URL of the scope's icon")
        create.add_argument(
            "--with-owners-group",
            metavar="GROUP",
            help="create this group in the new scope and make it the scope's owner",
        )

        show = self.add_verb(
            verbs, "show", "Show a scope: its owners, workspaces and file store policies."
        )
        show.add_argument("name", metavar="NAME")
        add_yaml_option(show)

        add = self.add_verb(
            verbs, "add_file_store", "Let a scope use a file store, with the given policies."
        )
        add.add_argument("scope", metavar="SCOPE")
        add.add_argument("store", metavar="STORE", help="file store name")
        add_policy_options(add, editing=False)

        edit = self.add_verb(
            verbs,
            "edit_file_store",
            "Change the policies of a file store in a scope; options not given are kept.",
        )
        edit.add_argument("scope", metavar="SCOPE")
        edit.add_argument("store", metavar="STORE", help="file store name")
        add_policy_options(edit, editing=True)

        remove = self.add_verb(
            verbs,
            "remove_file_store",
            "Stop a scope from using a file store. Refused while the store holds files of the "
            "scope that no other store of the scope holds: drain it first.",
        )
        remove.add_argument("scope", metavar="SCOPE")
        remove.add_argument("store", metavar="STORE", help="file store name")

    def verb_create(
        self, *, name: str, label: str, icon: str, with_owners_group: str | None, **_: Any
    ) -> None:
        if Scope.objects.filter(name=name).exists():
            fail(f"scope {name!r} already exists")
        scope = Scope(name=name, label=label, icon=icon)
        save_validated(scope)
        default_store = FileStore.objects.filter(name=FileStore.DEFAULT_NAME).first()
        if default_store is not None and default_store.instance_wide:
            FileStoreInScope.objects.create(scope=scope, file_store=default_store)
        if with_owners_group is not None:
            group = Group(scope=scope, name=with_owners_group)
            save_validated(group)
            scope.grant_role(group, ScopeRoles.OWNER)
        self.write(f"Created scope {scope.name}")

    def verb_show(self, *, name: str, yaml: bool, **_: Any) -> None:
        scope = get_scope(name)
        owners = list(
            Group.objects.filter(scope_roles__resource=scope, scope_roles__role=ScopeRoles.OWNER)
            .order_by("name")
            .values_list("name", flat=True)
        )
        workspaces = list(
            Workspace.objects.filter(scope=scope)
            .order_by("name")
            .values("name", "public", "default_expiration_delay")
        )
        stores = list(
            FileStoreInScope.objects.filter(scope=scope)
            .select_related("file_store")
            .order_by("file_store__name")
        )
        if yaml:
            self.write_yaml(
                {
                    "name": scope.name,
                    "label": scope.label,
                    "icon": scope.icon,
                    "owners": owners,
                    "workspaces": [
                        {
                            "name": workspace["name"],
                            "public": workspace["public"],
                            "default_expiration_delay_days": workspace[
                                "default_expiration_delay"
                            ].days,
                        }
                        for workspace in workspaces
                    ],
                    "file_stores": [
                        {
                            "name": link.file_store.name,
                            "backend": link.file_store.backend,
                            **{field: getattr(link, field) for field in POLICY_FIELDS},
                        }
                        for link in stores
                    ],
                }
            )
            return
        self.write(f"Scope: {scope.name}")
        self.write(f"Label: {scope.label or '-'}")
        self.write(f"Icon: {scope.icon or '-'}")
        self.write(f"Owners: {', '.join(owners) or '-'}")
        self.write()
        self.write("Workspaces:")
        self.write_table(
            ["NAME", "PUBLIC", "EXPIRATION (DAYS)"],
            [
                [w["name"], w["public"], w["default_expiration_delay"].days or "never"]
                for w in workspaces
            ],
        )
        self.write()
        self.write("File stores:")
        self.write_table(
            [
                "NAME",
                "BACKEND",
                "UPLOAD PRIO",
                "DOWNLOAD PRIO",
                "POPULATE",
                "DRAIN",
                "DRAIN TO",
                "READ-ONLY",
                "WRITE-ONLY",
                "SOFT MAX SIZE",
            ],
            [
                [
                    link.file_store.name,
                    link.file_store.backend,
                    *(getattr(link, field) for field in POLICY_FIELDS),
                ]
                for link in stores
            ],
        )

    def verb_add_file_store(self, *, scope: str, store: str, **options: Any) -> None:
        the_scope = get_scope(scope)
        the_store = get_file_store(store)
        if FileStoreInScope.objects.filter(scope=the_scope, file_store=the_store).exists():
            fail(f"scope {scope!r} already uses file store {store!r}: use edit_file_store")
        link = FileStoreInScope(scope=the_scope, file_store=the_store, **given_policies(options))
        save_validated(link)
        self.write(f"Scope {scope} now uses file store {store}")

    def verb_edit_file_store(self, *, scope: str, store: str, **options: Any) -> None:
        the_scope = get_scope(scope)
        the_store = get_file_store(store)
        link = (
            FileStoreInScope.objects.select_for_update()
            .filter(scope=the_scope, file_store=the_store)
            .first()
        )
        if link is None:
            fail(f"scope {scope!r} does not use file store {store!r}: use add_file_store")
        changes = given_policies(options)
        for field, value in changes.items():
            setattr(link, field, value)
        save_validated(link)
        self.write(f"Updated file store {store} in scope {scope}")

    def verb_remove_file_store(self, *, scope: str, store: str, **_: Any) -> None:
        the_scope = get_scope(scope)
        the_store = get_file_store(store)
        link = FileStoreInScope.objects.filter(scope=the_scope, file_store=the_store).first()
        if link is None:
            fail(f"scope {scope!r} does not use file store {store!r}")
        draining_to_it = sorted(
            FileStoreInScope.objects.filter(scope=the_scope, drain_to=the_store.name).values_list(
                "file_store__name", flat=True
            )
        )
        if draining_to_it:
            fail(
                f"file store(s) {', '.join(draining_to_it)} of scope {scope!r} drain to "
                f"{store!r}: change their --drain-to first"
            )
        scope_files = FileInArtifact.objects.filter(artifact__workspace__scope=the_scope).values(
            "file_id"
        )
        elsewhere = FileInStore.objects.filter(
            store__filestoreinscope__scope=the_scope, store__filestoreinscope__write_only=False
        ).exclude(store=the_store)
        stranded = (
            File.objects.filter(pk__in=scope_files, in_stores__store=the_store)
            .exclude(pk__in=elsewhere.values("file_id"))
            .count()
        )
        if stranded:
            fail(
                f"file store {store!r} holds {stranded} file(s) of scope {scope!r} that no "
                "other readable store of the scope holds: set --drain on it and run "
                "file_store vacuum first"
            )
        link.delete()
        self.write(f"Scope {scope} no longer uses file store {store}")
