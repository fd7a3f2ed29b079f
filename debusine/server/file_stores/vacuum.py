"""
`file_store vacuum`: bring the file stores back in line with the database and the policies.

One pass (`StorageVacuum.run`) does, in order:

1. delete incomplete artifacts untouched for a day (unless a collection holds them), with
   their partial uploads;
2. forget files that no artifact refers to any more, in every store;
3. delete leftovers in the upload directory, and partial uploads whose bytes are gone;
4. in every store, delete entries the database does not know of once they are a day old,
   delete old empty directories, and report database rows whose contents are missing;
5. apply the per-scope policies: `populate` copies files in, `drain` moves them out (to
   `drain_to`, or where uploads would go), and stores over a size limit (the store's
   `soft_max_size`/`max_size`, or a scope's `soft_max_size` for its share) lose the files of
   the least recently created artifacts first;
6. report complete files that no store readable by their scope holds.

Safety rules: contents are copied through a temporary file in the upload directory and their
SHA-256 is checked before they enter another store; a file leaves a store only once another
store is verified to hold it, and every scope reading it from there can read it elsewhere;
contents are deleted only after the transaction that forgets them commits. With `dry_run`
nothing changes and the report says what would be done.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q, QuerySet
from django.utils import timezone

from debusine.server.db.models import (
    Artifact,
    CollectionItem,
    File,
    FileInArtifact,
    FileInStore,
    FileStore,
    FileStoreInScope,
    FileUpload,
    Scope,
)
from debusine.server.file_stores import FileBackend, FileStoreError, get_backend
from debusine.server.file_stores.base import parse_entry_name
from debusine.server.file_stores.policies import scope_usage, upload_candidates

#: Entries, partial uploads and incomplete artifacts younger than this are left alone: they
#: may belong to an upload in progress.
MINIMUM_AGE = timedelta(days=1)

COPY_CHUNK_SIZE = 1024 * 1024

PAST_TENSE = {"delete": "Deleted", "copy": "Copied", "remove": "Removed", "forget": "Forgot"}


@dataclass
class VacuumReport:
    """What a pass did (or, in a dry run, would do), and the problems it could not fix."""

    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class StorageVacuum:
    """One pass of `file_store vacuum`; see the module docstring."""

    def __init__(
        self,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.dry_run = dry_run
        self.now = now or timezone.now()
        self.cutoff = self.now - MINIMUM_AGE
        self.progress = progress or (lambda message: None)
        self.report = VacuumReport()
        self._backends: dict[int, FileBackend] = {}
        #: Store sizes as this pass changes them (dry runs never touch the database).
        self._planned_sizes: dict[int, int] = {}

    # --- Bookkeeping ------------------------------------------------------------------------

    def did(self, verb: str, what: str) -> None:
        """Record an action: `verb` is its infinitive (`delete`), `what` the rest."""
        if self.dry_run:
            self.report.actions.append(f"Would {verb} {what}")
        else:
            self.report.actions.append(f"{PAST_TENSE[verb]} {what}")

    def problem(self, message: str) -> None:
        self.report.problems.append(message)

    def backend(self, store: FileStore) -> FileBackend:
        if store.pk not in self._backends:
            self._backends[store.pk] = get_backend(store)
        return self._backends[store.pk]

    def planned_size(self, store: FileStore) -> int:
        if store.pk not in self._planned_sizes:
            self._planned_sizes[store.pk] = FileStore.objects.get(pk=store.pk).total_size
        return self._planned_sizes[store.pk]

    def run(self) -> VacuumReport:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("incomplete artifacts", self.delete_incomplete_artifacts),
            ("unreferenced files", self.forget_unreferenced_files),
            ("upload directory", self.clean_upload_directory),
            ("store entries", self.check_store_entries),
            ("policies", self.apply_policies),
            ("size limits", self.apply_size_limits),
            ("missing contents", self.report_unreadable_files),
        ]
        for name, step in steps:
            self.progress(f"vacuum_storage: {name}...")
            step()
        return self.report

    # --- 1. Incomplete artifacts -------------------------------------------------------------

    def delete_incomplete_artifacts(self) -> None:
        recent_upload = FileUpload.objects.filter(
            file_in_artifact__artifact=OuterRef("pk"), last_activity_at__gte=self.cutoff
        )
        stale = (
            Artifact.objects.filter(created_at__lt=self.cutoff, fileinartifact__complete=False)
            .exclude(Exists(recent_upload))
            .exclude(Exists(CollectionItem.objects.filter(artifact=OuterRef("pk"))))
            .distinct()
            .order_by("pk")
        )
        for artifact in stale:
            self.did("delete", f"incomplete artifact {artifact.pk} ({artifact.category})")
            if self.dry_run:
                continue
            uploads = list(
                FileUpload.objects.filter(file_in_artifact__artifact=artifact).values_list(
                    "path", flat=True
                )
            )
            with transaction.atomic():
                artifact.delete()
                transaction.on_commit(partial(remove_partial_uploads, uploads))

    # --- 2. Files no artifact refers to -------------------------------------------------------

    def forget_unreferenced_files(self) -> None:
        unreferenced = File.objects.exclude(
            Exists(FileInArtifact.objects.filter(file=OuterRef("pk")))
        ).order_by("pk")
        for file in unreferenced:
            stores = list(FileStore.objects.filter(files_in_store__file=file).order_by("name"))
            self.did(
                "remove",
                f"unreferenced file {file} from "
                f"{', '.join(store.name for store in stores) or 'no store'}",
            )
            if self.dry_run:
                continue
            with transaction.atomic():
                # Locked and checked again: an artifact created meanwhile may use it.
                locked = File.objects.select_for_update().filter(pk=file.pk).first()
                if locked is None or FileInArtifact.objects.filter(file=locked).exists():
                    continue
                for store in stores:
                    self.backend(store).remove_file(locked)
                locked.delete()

    # --- 3. Upload directory ----------------------------------------------------------------

    def clean_upload_directory(self) -> None:
        directory = Path(settings.DEBUSINE_UPLOAD_DIRECTORY)
        known = set(FileUpload.objects.values_list("path", flat=True))
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                if entry.name in known or not entry.is_file():
                    continue
                if modified_at(entry) >= self.cutoff:
                    continue
                self.did("delete", f"leftover partial upload {entry.name}")
                if not self.dry_run:
                    entry.unlink(missing_ok=True)
        for upload in FileUpload.objects.filter(last_activity_at__lt=self.cutoff).order_by("pk"):
            if (directory / upload.path).exists():
                continue
            self.did(
                "forget",
                f"partial upload {upload.pk} of {upload.file_in_artifact_id} whose bytes "
                "are gone (the client restarts it from the beginning)",
            )
            if not self.dry_run:
                FileUpload.objects.filter(pk=upload.pk).delete()

    # --- 4. Store entries against FileInStore rows -------------------------------------------

    def check_store_entries(self) -> None:
        for store in FileStore.objects.order_by("name"):
            try:
                self.check_entries_of(store)
            except FileStoreError as error:
                self.problem(f"Store {store.name}: cannot be checked: {error}")

    def check_entries_of(self, store: FileStore) -> None:
        backend = self.backend(store)
        recorded = {
            (bytes(sha256), size): pk
            for pk, sha256, size in FileInStore.objects.filter(store=store).values_list(
                "file_id", "file__sha256", "file__size"
            )
        }
        present: set[tuple[bytes, int]] = set()
        young_orphans = 0
        for entry in backend.list_entries():
            key = parse_entry_name(entry.name)
            if key is not None and key in recorded:
                present.add(key)
                continue
            if entry.modified_at >= self.cutoff:
                young_orphans += 1
                continue
            if key is not None and recorded_in(store, key):
                present.add(key)  # recorded since the listing began: an upload just committed
                continue
            self.did(
                "delete", f"{entry.name} from store {store.name}: the database does not know it"
            )
            if not self.dry_run:
                backend.remove_entry(entry.name)
        if young_orphans:
            self.report.notes.append(
                f"Store {store.name}: kept {young_orphans} unknown entries younger than a day"
                " (uploads in progress, or files newer than a restored database)"
            )
        if not self.dry_run:
            for name in backend.remove_empty_directories(self.cutoff):
                self.did("delete", f"empty directory {name} from store {store.name}")
        missing = set(recorded) - present
        for sha256, size in sorted(missing):
            self.problem(
                f"Store {store.name}: contents of {sha256.hex()}-{size} are missing although "
                "the database says the store holds them"
            )

    # --- 5. Policies --------------------------------------------------------------------------

    def apply_policies(self) -> None:
        links = FileStoreInScope.objects.select_related("scope", "file_store").order_by(
            "scope__name", "file_store__name"
        )
        for link in links:
            if link.populate:
                self.populate(link)
            if link.drain:
                self.drain(link)

    def populate(self, link: FileStoreInScope) -> None:
        store = link.file_store
        missing = (
            scope_files(link.scope)
            .exclude(in_stores__store=store)
            .filter(size__gt=0)
            .order_by("pk")
        )
        for file in missing:
            max_size = store.max_size
            if max_size is not None and self.planned_size(store) + file.size > max_size:
                self.problem(
                    f"Scope {link.scope.name}: cannot populate store {store.name} with {file}: "
                    "it would exceed max_size"
                )
                continue
            self.copy(file, store, reason=f"populate (scope {link.scope.name})")

    def drain(self, link: FileStoreInScope) -> None:
        store = link.file_store
        for file in scope_files(link.scope).filter(in_stores__store=store).order_by("pk"):
            self.move_away(file, store, link.scope, drain_to=link.drain_to, reason="drain")

    def apply_size_limits(self) -> None:
        for store in FileStore.objects.order_by("name"):
            limits = [
                limit for limit in (store.soft_max_size, store.max_size) if limit is not None
            ]
            if not limits or self.planned_size(store) <= min(limits):
                continue
            limit = min(limits)
            for file in least_recently_used(
                File.objects.filter(in_stores__store=store), Q()
            ).iterator():
                if self.planned_size(store) <= limit:
                    break
                scope = (
                    Scope.objects.filter(
                        filestoreinscope__file_store=store,
                        workspaces__artifacts__fileinartifact__file=file,
                    )
                    .order_by("name")
                    .first()
                )
                if scope is None:
                    continue
                self.move_away(file, store, scope, reason=f"size limit of {limit} bytes")
            if self.planned_size(store) > limit:
                self.problem(
                    f"Store {store.name} holds {self.planned_size(store)} bytes, over its limit "
                    f"of {limit}: no other store can take enough files"
                )
        for link in FileStoreInScope.objects.filter(soft_max_size__isnull=False).select_related(
            "scope", "file_store"
        ):
            self.apply_scope_soft_limit(link)

    def apply_scope_soft_limit(self, link: FileStoreInScope) -> None:
        assert link.soft_max_size is not None
        usage = scope_usage(link.scope, link.file_store)
        if usage <= link.soft_max_size:
            return
        files = least_recently_used(
            scope_files(link.scope).filter(in_stores__store=link.file_store),
            Q(fileinartifact__artifact__workspace__scope=link.scope),
        )
        for file in files.iterator():
            if usage <= link.soft_max_size:
                break
            if self.move_away(
                file,
                link.file_store,
                link.scope,
                reason=f"soft limit of {link.soft_max_size} bytes for scope {link.scope.name}",
            ):
                usage -= file.size
        if usage > link.soft_max_size:
            self.problem(
                f"Scope {link.scope.name} uses {usage} bytes of store {link.file_store.name}, "
                f"over its soft_max_size of {link.soft_max_size}: no other store can take enough"
            )

    # --- Moving files between stores ----------------------------------------------------------

    def move_away(
        self,
        file: File,
        store: FileStore,
        scope: Scope,
        *,
        reason: str,
        drain_to: str | None = None,
    ) -> bool:
        """Take `file` out of `store`, copying it elsewhere first when needed."""
        if not self.other_copies_suffice(file, store):
            target = self.move_target(file, store, scope, drain_to)
            if target is None:
                self.problem(
                    f"Scope {scope.name}: no store can take {file} out of store {store.name} "
                    f"({reason})"
                )
                return False
            if not self.copy(file, target, reason=reason):
                return False
            if not self.dry_run and not self.other_copies_suffice(file, store):
                self.problem(
                    f"{file} stays in store {store.name}: another scope reads it only from there"
                )
                return False
        self.did("remove", f"{file} from store {store.name} ({reason})")
        self._planned_sizes[store.pk] = self.planned_size(store) - file.size
        if not self.dry_run:
            with transaction.atomic():
                self.backend(store).remove_file(file)
        return True

    def move_target(
        self, file: File, store: FileStore, scope: Scope, drain_to: str | None
    ) -> FileStore | None:
        if drain_to is not None:
            link = (
                FileStoreInScope.objects.filter(scope=scope, file_store__name=drain_to)
                .select_related("file_store")
                .first()
            )
            if link is None or link.read_only or link.write_only:
                return None
            target = link.file_store
            limits = [x for x in (target.soft_max_size, target.max_size) if x is not None]
            if limits and self.planned_size(target) + file.size > min(limits):
                return None
            return target
        for link in upload_candidates(
            scope, file.size, exclude=[store.pk], enforce_soft_limits=True
        ):
            limits = [
                x
                for x in (link.file_store.soft_max_size, link.file_store.max_size)
                if x is not None
            ]
            if not limits or self.planned_size(link.file_store) + file.size <= min(limits):
                return link.file_store
        return None

    def other_copies_suffice(self, file: File, store: FileStore) -> bool:
        """
        Whether `store` may lose `file`: another store verifiably holds it, and every scope
        that reads the file from `store` can read it from another of its stores.
        """
        others = [
            in_store.store
            for in_store in FileInStore.objects.filter(file=file)
            .exclude(store=store)
            .select_related("store")
        ]
        verified = set()
        for other in others:
            try:
                if self.backend(other).has_contents(file):
                    verified.add(other.pk)
            except FileStoreError:
                continue
        if not verified:
            return False
        readers = FileStoreInScope.objects.filter(
            file_store=store,
            write_only=False,
            scope__workspaces__artifacts__fileinartifact__file=file,
        ).values_list("scope_id", flat=True)
        for scope_id in set(readers):
            readable_elsewhere = FileStoreInScope.objects.filter(
                scope_id=scope_id, write_only=False, file_store_id__in=verified
            ).exists()
            if not readable_elsewhere:
                return False
        return True

    def copy(self, file: File, target: FileStore, *, reason: str) -> bool:
        """Copy `file` into `target` from any store holding it, checking its SHA-256."""
        sources = [
            in_store.store
            for in_store in FileInStore.objects.filter(file=file)
            .exclude(store=target)
            .select_related("store")
            .order_by("store__name")
        ]
        if not sources:
            self.problem(f"Cannot copy {file} to store {target.name}: no store holds it")
            return False
        self.did("copy", f"{file} from store {sources[0].name} to store {target.name} ({reason})")
        self._planned_sizes[target.pk] = self.planned_size(target) + file.size
        if self.dry_run:
            return True
        for source in sources:
            try:
                temporary = self.verified_copy(file, self.backend(source))
            except FileStoreError as error:
                self.problem(f"Cannot read {file} from store {source.name}: {error}")
                continue
            if temporary is None:
                self.problem(f"Store {source.name} holds corrupt contents for {file}")
                continue
            target_backend = self.backend(target)
            try:
                target_backend.put_contents(file, temporary, move=True)
            except FileStoreError as error:
                self.problem(f"Cannot write {file} to store {target.name}: {error}")
                return False
            finally:
                temporary.unlink(missing_ok=True)
            if not target_backend.has_contents(file):
                self.problem(f"Store {target.name} does not hold {file} after copying it there")
                return False
            with transaction.atomic():
                target_backend.record(file)
            return True
        return False

    @staticmethod
    def verified_copy(file: File, source: FileBackend) -> Path | None:
        """`file` copied from `source` to a temporary file; None if the contents are wrong."""
        directory = Path(settings.DEBUSINE_UPLOAD_DIRECTORY)
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f"vacuum-{secrets.token_hex(8)}"
        hasher = hashlib.sha256()
        size = 0
        try:
            with source.open_contents(file) as reader, open(temporary, "wb") as writer:
                while chunk := reader.read(COPY_CHUNK_SIZE):
                    hasher.update(chunk)
                    size += len(chunk)
                    writer.write(chunk)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        if hasher.digest() != bytes(file.sha256) or size != file.size:
            temporary.unlink(missing_ok=True)
            return None
        return temporary

    # --- 6. Files no readable store holds ------------------------------------------------------

    def report_unreadable_files(self) -> None:
        for scope in Scope.objects.order_by("name"):
            readable = FileStoreInScope.objects.filter(scope=scope, write_only=False).values(
                "file_store_id"
            )
            unreadable = (
                FileInArtifact.objects.filter(
                    artifact__workspace__scope=scope, complete=True, file__size__gt=0
                )
                .exclude(
                    Exists(
                        FileInStore.objects.filter(file=OuterRef("file_id"), store_id__in=readable)
                    )
                )
                .select_related("file")
                .order_by("artifact_id", "path")
            )
            for item in unreadable:
                self.problem(
                    f"Artifact {item.artifact_id} file {item.path!r} ({item.file}): no store "
                    f"readable by scope {scope.name} holds its contents"
                )


def recorded_in(store: FileStore, key: tuple[bytes, int]) -> bool:
    """Whether the database says `store` holds the contents `key` (sha256, size), right now."""
    sha256, size = key
    return FileInStore.objects.filter(store=store, file__sha256=sha256, file__size=size).exists()


def scope_files(scope: Scope) -> QuerySet[File]:
    """The files of the complete artifact files of `scope`."""
    return File.objects.filter(
        pk__in=FileInArtifact.objects.filter(
            artifact__workspace__scope=scope, complete=True
        ).values("file_id")
    )


def least_recently_used(files: QuerySet[File], artifact_filter: Q) -> QuerySet[File]:
    """`files` ordered by the newest artifact using each, oldest first, then largest first."""
    return files.annotate(
        last_used_at=Max("fileinartifact__artifact__created_at", filter=artifact_filter)
    ).order_by("last_used_at", "-size", "pk")


def modified_at(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.get_current_timezone())


def remove_partial_uploads(paths: Iterable[str]) -> None:
    directory = Path(settings.DEBUSINE_UPLOAD_DIRECTORY)
    for name in paths:
        # A partial upload's name is one path component (see uploads.py).
        if os.sep not in name:
            (directory / name).unlink(missing_ok=True)
