"""
`debusine-admin instance`: the whole instance's configuration and its retention pass.

`instance show` prints what an operator needs to set up the web server and the clients.

`instance delete_expired [--dry-run]` deletes expired work requests and artifacts (run daily
by `debusine-server-delete-expired.timer`). One transaction, one "now" for every rule:

1. Work requests expire at `created_at` + their `expiration_delay`, or the workspace's
   `default_expiration_delay` when unset (a zero delay: never). A workflow and its
   descendants go together, only once all of them have expired and none created or removed
   items of a collection other than a workflow-internal one. The internal collections of
   deleted workflows go with them.
2. Collection history: a removed item loses its artifact once the collection's
   `full_history_retention_period` has passed since its removal, and is deleted once the
   `metadata_only_retention_period` has passed too (no full-history period: kept forever).
3. Expired artifacts (same rule as work requests) are deleted unless retained: by an item of
   a collection that retains artifacts (`always`, or `workflow` while its workflow has not
   finished), or through relations from a retained or unexpired artifact. Items of other
   collections that still point at a deleted artifact become history without it.
4. Files no artifact refers to any more are forgotten, and their contents are removed from
   every store once the transaction commits.

With --dry-run everything is computed in the transaction, reported, then rolled back.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management.base import CommandParser
from django.db import transaction
from django.db.models import (
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Model,
    Q,
    QuerySet,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from debusine.server.db.models import (
    Artifact,
    ArtifactRelation,
    Collection,
    CollectionItem,
    CollectionRetention,
    File,
    FileInArtifact,
    FileStore,
    WorkRequest,
    WorkRequestStatus,
)
from debusine.server.management.base import NounCommand, add_yaml_option

#: Collections that hold what a workflow passes between its steps.
WORKFLOW_INTERNAL_CATEGORY = "debusine:workflow-internal"

#: Host names served over plain HTTP in development: everything else is behind HTTPS.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def redacted(url: str) -> str:
    """`url` with any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def api_url() -> str:
    """The `api-url` to put in client and worker configuration."""
    fqdn = settings.DEBUSINE_FQDN
    scheme = "http" if fqdn in LOCAL_HOSTS else "https"
    return f"{scheme}://{fqdn}/api"


def instance_info() -> dict[str, Any]:
    database = settings.DATABASES["default"]
    return {
        "data_dir": str(settings.DEBUSINE_DATA_DIR),
        "database": {
            "host": database["HOST"] or "(local socket)",
            "port": database["PORT"] or "5432",
            "name": database["NAME"],
            "user": database["USER"] or "(current user)",
        },
        "redis_url": redacted(settings.DEBUSINE_REDIS_URL),
        "store_directory": str(settings.DEBUSINE_STORE_DIRECTORY),
        "upload_directory": str(settings.DEBUSINE_UPLOAD_DIRECTORY),
        "static_root": str(settings.STATIC_ROOT),
        "default_scope": settings.DEBUSINE_DEFAULT_SCOPE,
        "default_workspace": settings.DEBUSINE_DEFAULT_WORKSPACE,
        "fqdn": settings.DEBUSINE_FQDN,
        "allowed_hosts": list(dict.fromkeys(settings.ALLOWED_HOSTS)),
        "api_url": api_url(),
    }


M = TypeVar("M", bound=Model)


def expired(queryset: QuerySet[M], now: datetime) -> QuerySet[M]:
    """Rows of `queryset` (artifacts or work requests) whose expiry time has passed."""
    delay = Coalesce(
        F("expiration_delay"),
        F("workspace__default_expiration_delay"),
        output_field=DurationField(),
    )
    annotated: QuerySet[M] = queryset.annotate(  # type: ignore[assignment]
        effective_delay=delay,
        expires_at=ExpressionWrapper(F("created_at") + delay, output_field=DateTimeField()),
    )
    return annotated.filter(effective_delay__gt=timedelta(0), expires_at__lte=now)


class ExpiryPass:
    """One run of delete_expired; `report` lists what it deleted."""

    def __init__(self, now: datetime, progress: Callable[[str], None]) -> None:
        self.now = now
        self.progress = progress
        self.report: list[str] = []

    def run(self) -> None:
        self.progress("delete_expired: work requests...")
        self.delete_work_requests()
        self.progress("delete_expired: collection history...")
        self.expire_collection_history()
        self.progress("delete_expired: artifacts...")
        file_ids = self.delete_artifacts()
        self.progress("delete_expired: files...")
        self.forget_unreferenced_files(file_ids)

    # --- Work requests ------------------------------------------------------------------------

    def delete_work_requests(self) -> None:
        expired_ids = set(
            expired(WorkRequest.objects.all(), self.now).values_list("pk", flat=True)
        )
        if not expired_ids:
            return
        parents = dict(WorkRequest.objects.values_list("pk", "parent_id"))
        # Work requests that changed a collection other than a workflow-internal one are
        # part of that collection's history: they stay.
        non_internal = CollectionItem.objects.exclude(
            parent_collection__category=WORKFLOW_INTERNAL_CATEGORY
        )
        kept_by_collections = set(
            non_internal.filter(created_by_workflow__isnull=False).values_list(
                "created_by_workflow_id", flat=True
            )
        ) | set(
            non_internal.filter(removed_by_workflow__isnull=False).values_list(
                "removed_by_workflow_id", flat=True
            )
        )

        def root_of(pk: int) -> int:
            while (parent := parents.get(pk)) is not None:
                pk = parent
            return pk

        trees: dict[int, list[int]] = defaultdict(list)
        for pk in parents:
            trees[root_of(pk)].append(pk)
        for root, members in sorted(trees.items()):
            if not all(pk in expired_ids for pk in members):
                continue
            if any(pk in kept_by_collections for pk in members):
                continue
            internal = list(
                Collection.objects.filter(workflow__in=members).values_list("pk", flat=True)
            )
            WorkRequest.objects.filter(pk=root).delete()
            CollectionItem.objects.filter(parent_collection__in=internal).delete()
            Collection.objects.filter(pk__in=internal).delete()
            extra = f" and {len(members) - 1} descendant(s)" if len(members) > 1 else ""
            self.report.append(f"Deleted work request {root}{extra}")

    # --- Collection history ---------------------------------------------------------------------

    def expire_collection_history(self) -> None:
        removed = (
            CollectionItem.objects.filter(
                removed_at__isnull=False,
                parent_collection__full_history_retention_period__isnull=False,
            )
            .select_related("parent_collection")
            .order_by("pk")
        )
        for item in removed:
            collection = item.parent_collection
            assert item.removed_at is not None
            assert collection.full_history_retention_period is not None
            history_ends = item.removed_at + collection.full_history_retention_period
            metadata_ends = history_ends + (
                collection.metadata_only_retention_period or timedelta(0)
            )
            if metadata_ends <= self.now:
                item.delete()
                self.report.append(f"Deleted removed item {item.name!r} of {collection}")
            elif history_ends <= self.now and item.artifact_id is not None:
                item.artifact = None
                item.save(update_fields=["artifact"])
                self.report.append(
                    f"Dropped the artifact of removed item {item.name!r} of {collection}"
                )

    # --- Artifacts ------------------------------------------------------------------------------

    def retained_by_collections(self) -> QuerySet[CollectionItem]:
        running_workflows = WorkRequest.objects.exclude(
            status__in=[WorkRequestStatus.COMPLETED, WorkRequestStatus.ABORTED]
        ).filter(internal_collection__isnull=False)
        return CollectionItem.objects.filter(artifact__isnull=False).filter(
            Q(parent_collection__retains_artifacts=CollectionRetention.ALWAYS)
            | Q(
                parent_collection__retains_artifacts=CollectionRetention.WORKFLOW,
                parent_collection__workflow__in=running_workflows,
            )
        )

    def delete_artifacts(self) -> set[int]:
        """Delete expired, unretained artifacts; return the ids of the files they used."""
        expired_ids = set(expired(Artifact.objects.all(), self.now).values_list("pk", flat=True))
        if not expired_ids:
            return set()
        kept = set(Artifact.objects.exclude(pk__in=expired_ids).values_list("pk", flat=True))
        kept |= set(self.retained_by_collections().values_list("artifact_id", flat=True))
        # Whatever a kept artifact relates to is kept too, transitively.
        frontier = set(kept)
        while frontier:
            targets = set(
                ArtifactRelation.objects.filter(artifact_id__in=frontier).values_list(
                    "target_id", flat=True
                )
            )
            frontier = targets - kept
            kept |= frontier
        doomed = sorted(expired_ids - kept)
        if not doomed:
            return set()
        file_ids = set(
            FileInArtifact.objects.filter(artifact_id__in=doomed).values_list("file_id", flat=True)
        )
        # Items of collections that do not retain artifacts keep their history, not the link.
        CollectionItem.objects.filter(artifact_id__in=doomed, removed_at__isnull=True).update(
            removed_at=self.now
        )
        CollectionItem.objects.filter(artifact_id__in=doomed).update(artifact=None)
        Artifact.objects.filter(pk__in=doomed).delete()
        for pk in doomed:
            self.report.append(f"Deleted artifact {pk}")
        return file_ids

    def forget_unreferenced_files(self, file_ids: set[int]) -> None:
        from debusine.server.file_stores import get_backend

        orphans = File.objects.filter(pk__in=file_ids, fileinartifact__isnull=True).order_by("pk")
        for file in orphans:
            stores = list(FileStore.objects.filter(files_in_store__file=file).order_by("name"))
            for store in stores:
                # Contents go once the transaction commits: a rollback keeps everything.
                get_backend(store).remove_file(file)
            file.delete()
            self.report.append(
                f"Removed file {file} from {', '.join(s.name for s in stores) or 'no store'}"
            )


class Command(NounCommand):
    help = (
        "The whole instance: show its configuration, delete what has expired (run daily by "
        "debusine-server-delete-expired.timer)."
    )

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        show = self.add_verb(
            verbs,
            "show",
            "Print the configuration needed to set up the web server and clients: directories, "
            "database and Redis (without passwords), default scope, allowed hosts, API URL.",
        )
        add_yaml_option(show)

        delete_expired = self.add_verb(
            verbs,
            "delete_expired",
            "Delete expired work requests and artifacts (keeping what collections, relations "
            "and unexpired workflows still need), and remove files left without references "
            "from every store.",
        )
        delete_expired.add_argument(
            "--dry-run",
            action="store_true",
            help="say what would be deleted, then roll everything back",
        )

    def verb_show(self, *, yaml: bool, **_: Any) -> None:
        info = instance_info()
        if yaml:
            self.write_yaml(info)
            return
        database = info["database"]
        lines = [
            ("Data directory", info["data_dir"]),
            (
                "Database",
                f"{database['name']} on {database['host']}:{database['port']}"
                f" as {database['user']}",
            ),
            ("Redis", info["redis_url"]),
            ("Store directory", info["store_directory"]),
            ("Upload directory", info["upload_directory"]),
            ("Static files (serve at /static/)", info["static_root"]),
            ("Default scope", info["default_scope"]),
            ("Default workspace", info["default_workspace"]),
            ("Server name (DEBUSINE_FQDN)", info["fqdn"]),
            ("Allowed hosts", ", ".join(info["allowed_hosts"])),
            ("API URL for clients and workers", info["api_url"]),
        ]
        width = max(len(label) for label, _ in lines)
        for label, value in lines:
            self.write(f"{label + ':':<{width + 1}} {value}")

    def verb_delete_expired(self, *, dry_run: bool, **_: Any) -> None:
        expiry = ExpiryPass(timezone.now(), lambda message: self.stderr.write(message))
        # The command runs this in one transaction: a failure anywhere deletes nothing.
        expiry.run()
        prefix = "Would have: " if dry_run else ""
        for line in expiry.report:
            self.write(prefix + line)
        self.write(f"{len(expiry.report)} deletion(s){' planned (dry run)' if dry_run else ''}")
        if dry_run:
            transaction.set_rollback(True)
