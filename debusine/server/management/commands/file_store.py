"""`debusine-admin file_store`: create, show, list and delete file stores; vacuum them."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandError, CommandParser

from debusine.server.db.models import (
    Asset,
    AssetCategory,
    FileInStore,
    FileStore,
    FileStoreBackend,
    FileStoreInScope,
)
from debusine.server.file_stores.vacuum import StorageVacuum
from debusine.server.management.base import (
    NounCommand,
    add_yaml_option,
    check_choice,
    fail,
    non_negative_int,
    read_json_mapping,
    save_validated,
)

#: Backends `file_store create` accepts.
CREATABLE_BACKENDS = [
    FileStoreBackend.LOCAL.value,
    FileStoreBackend.S3.value,
    FileStoreBackend.MEMORY.value,
]

#: Exit code of `file_store vacuum` when the pass finished but problems remain.
EXIT_PROBLEMS_REMAIN = 1

#: Configuration keys never printed: secrets stay in the database.
SECRET_KEYS = {"secret_access_key"}


def get_file_store(name: str) -> FileStore:
    store = FileStore.objects.filter(name=name).first()
    if store is None:
        fail(f"file store {name!r} does not exist")
    return store


def get_provider_account(spec: str) -> Asset:
    """A cloud provider account asset, by id or by its `name`."""
    accounts = Asset.objects.filter(category=AssetCategory.CLOUD_PROVIDER_ACCOUNT)
    found = (accounts.filter(pk=int(spec)).first() if spec.isdigit() else None) or accounts.filter(
        data__name=spec
    ).first()
    if found is None:
        fail(f"cloud provider account {spec!r} does not exist")
    return found


def shown_configuration(configuration: dict[str, Any]) -> dict[str, Any]:
    return {
        key: ("<hidden>" if key in SECRET_KEYS else value) for key, value in configuration.items()
    }


class Command(NounCommand):
    help = (
        "Manage file stores: create, show, list, delete, vacuum. `scope add_file_store` lets a"
        " scope use one."
    )

    # Each step of a vacuum pass commits on its own, so that the contents of forgotten files
    # are deleted as the pass goes, and a late failure undoes nothing.
    verbs_without_command_transaction = frozenset({"vacuum"})

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
            "Local: base_directory (absolute path); S3: bucket_name, storage_class, "
            "endpoint_url, region_name, access_key_id, secret_access_key, "
            "multipart_threshold, multipart_chunk_size, connect_timeout, read_timeout, "
            "max_attempts; Memory: name",
        )
        create.add_argument(
            "--provider-account",
            metavar="ACCOUNT",
            help="S3: take credentials, endpoint and region from this "
            "debusine:cloud-provider-account asset (id or name)",
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
            help="file_store vacuum drains the store down to this size",
        )
        create.add_argument(
            "--max-size",
            type=non_negative_int,
            metavar="BYTES",
            help="uploads never make the store larger than this",
        )

        listing = self.add_verb(verbs, "list", "List file stores with their current size.")
        add_yaml_option(listing)

        show = self.add_verb(
            verbs, "show", "Show a file store: configuration, sizes, files and scopes using it."
        )
        show.add_argument("name", metavar="NAME")
        add_yaml_option(show)

        delete = self.add_verb(
            verbs,
            "delete",
            "Delete a file store that no scope uses. A store that still holds files is only "
            "deleted with --force, and only when every file has a copy in another store.",
        )
        delete.add_argument("name", metavar="NAME")
        delete.add_argument(
            "--force",
            action="store_true",
            help="also delete a store that holds files: their rows go, and their contents "
            "are removed from the store once the deletion commits",
        )
        delete.add_argument(
            "--dry-run", action="store_true", help="say what would be deleted, change nothing"
        )

        vacuum = self.add_verb(
            verbs,
            "vacuum",
            "Delete files the database does not know of (older than a day), incomplete "
            "artifacts and stale partial uploads; apply the populate, drain and size-limit "
            "policies; report files whose contents are missing. Exit code 1 when problems "
            "remain.",
        )
        vacuum.add_argument(
            "--dry-run", action="store_true", help="say what would be done, change nothing"
        )

    def verb_create(
        self,
        *,
        name: str,
        backend: str,
        configuration: str | None,
        instance_wide: bool,
        soft_max_size: int | None,
        max_size: int | None,
        provider_account: str | None,
        **_: Any,
    ) -> None:
        check_choice(backend, CREATABLE_BACKENDS, "backend")
        account = get_provider_account(provider_account) if provider_account else None
        if account is not None and backend != FileStoreBackend.S3:
            fail("--provider-account only applies to S3 stores")
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
            provider_account=account,
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

    def verb_show(self, *, name: str, yaml: bool, **_: Any) -> None:
        store = get_file_store(name)
        scopes = list(
            FileStoreInScope.objects.filter(file_store=store)
            .order_by("scope__name")
            .values_list("scope__name", flat=True)
        )
        details = {
            "name": store.name,
            "backend": store.backend,
            "configuration": shown_configuration(store.configuration),
            "provider_account": store.provider_account_id,
            "instance_wide": store.instance_wide,
            "soft_max_size": store.soft_max_size,
            "max_size": store.max_size,
            "total_size": store.total_size,
            "files": FileInStore.objects.filter(store=store).count(),
            "scopes": scopes,
        }
        if yaml:
            self.write_yaml(details)
            return
        for key, value in details.items():
            if isinstance(value, list):
                value = ", ".join(value) or "-"
            elif isinstance(value, dict):
                value = " ".join(f"{k}={v}" for k, v in value.items()) or "-"
            elif value is None:
                value = "-"
            self.write(f"{key.replace('_', ' ').capitalize()}: {value}")

    def verb_delete(self, *, name: str, force: bool, dry_run: bool, **_: Any) -> None:
        store = get_file_store(name)
        if store.name == FileStore.DEFAULT_NAME:
            fail("the Default file store cannot be deleted")
        scopes = sorted(
            FileStoreInScope.objects.filter(file_store=store).values_list("scope__name", flat=True)
        )
        if scopes:
            fail(
                f"file store {name!r} is used by scope(s) {', '.join(scopes)}: "
                "remove it with `scope remove_file_store` first"
            )
        held = FileInStore.objects.filter(store=store)
        count = held.count()
        if count and not force:
            fail(
                f"file store {name!r} still holds {count} file(s): drain it with "
                "file_store vacuum first, or use --force"
            )
        # Never lose the last copy: with --force a file must still be in another store.
        only_here = held.exclude(
            file__in=FileInStore.objects.exclude(store=store).values("file")
        ).count()
        if only_here:
            fail(
                f"{only_here} file(s) of store {name!r} are in no other store: deleting it "
                "would lose them; drain it with file_store vacuum first"
            )
        if dry_run:
            self.write(f"Would delete file store {name} and forget {count} file(s) in it")
            return
        if count:
            from debusine.server.file_stores import get_backend

            backend = get_backend(store)
            for file_in_store in held.select_related("file"):
                backend.remove_file(file_in_store.file)
        store.delete()
        self.write(f"Deleted file store {name} ({count} file(s) removed from it)")

    def verb_vacuum(self, *, dry_run: bool, **_: Any) -> None:
        vacuum = StorageVacuum(
            dry_run=dry_run, progress=lambda message: self.stderr.write(message)
        )
        report = vacuum.run()
        for action in report.actions:
            self.write(action)
        for note in report.notes:
            self.write(f"Note: {note}")
        for problem in report.problems:
            self.write(f"Problem: {problem}")
        summary = (
            f"{len(report.actions)} action(s){' planned' if dry_run else ''}, "
            f"{len(report.problems)} problem(s)"
        )
        if report.problems:
            raise CommandError(summary, returncode=EXIT_PROBLEMS_REMAIN)
        self.write(summary)
