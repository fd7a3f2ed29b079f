"""`debusine-admin file_store`: create file stores and list them with their sizes."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import FileStore, FileStoreBackend
from debusine.server.management.utils import (
    NounCommand,
    add_yaml_option,
    check_choice,
    fail,
    non_negative_int,
    read_json_mapping,
    save_validated,
)

#: Backends `file_store create` accepts now (S3 needs provider accounts, which come later).
CREATABLE_BACKENDS = [FileStoreBackend.LOCAL.value, FileStoreBackend.MEMORY.value]


class Command(NounCommand):
    help = "Manage file stores: create, list. `scope add_file_store` lets a scope use one."

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(verbs, "create", "Create a file store.")
        create.add_argument("name", metavar="NAME")
        create.add_argument(
            "backend", metavar="BACKEND", help=f"one of: {', '.join(CREATABLE_BACKENDS)}"
        )
        create.add_argument(
            "--configuration",
            metavar="FILE",
            help="backend configuration as a JSON or YAML mapping from FILE ('-': stdin); "
            "Local: base_directory (absolute path); Memory: name",
        )
        create.add_argument(
            "--instance-wide",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="whether several scopes may use the store (default: yes)",
        )
        create.add_argument(
            "--soft-max-size",
            type=non_negative_int,
            metavar="BYTES",
            help="vacuum_storage drains the store down to this size",
        )
        create.add_argument(
            "--max-size",
            type=non_negative_int,
            metavar="BYTES",
            help="uploads never make the store larger than this",
        )

        listing = self.add_verb(verbs, "list", "List file stores with their current size.")
        add_yaml_option(listing)

    def verb_create(
        self,
        *,
        name: str,
        backend: str,
        configuration: str | None,
        instance_wide: bool,
        soft_max_size: int | None,
        max_size: int | None,
        **_: Any,
    ) -> None:
        check_choice(backend, CREATABLE_BACKENDS, "backend")
        if FileStore.objects.filter(name=name).exists():
            fail(f"file store {name!r} already exists")
        config: dict[str, Any] = {}
        if configuration is not None:
            # JSON is a subset of YAML: one parser reads both.
            config = read_json_mapping(configuration, self.stdin)
        store = FileStore(
            name=name,
            backend=backend,
            configuration=config,
            instance_wide=instance_wide,
            soft_max_size=soft_max_size,
            max_size=max_size,
        )
        save_validated(store)
        self.write(f"Created file store {store.name}")

    def verb_list(self, *, yaml: bool, **_: Any) -> None:
        stores = list(
            FileStore.objects.order_by("name").values(
                "name",
                "backend",
                "instance_wide",
                "soft_max_size",
                "max_size",
                "total_size",
                "configuration",
            )
        )
        if yaml:
            self.write_yaml(stores)
            return
        self.write_table(
            ["NAME", "BACKEND", "INSTANCE-WIDE", "SOFT MAX SIZE", "MAX SIZE", "TOTAL SIZE"],
            [
                [
                    store["name"],
                    store["backend"],
                    store["instance_wide"],
                    store["soft_max_size"],
                    store["max_size"],
                    store["total_size"],
                ]
                for store in stores
            ],
        )
