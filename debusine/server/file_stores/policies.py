"""
Which store of a scope receives an upload, and which one serves a download.

The choice follows the scope's `FileStoreInScope` rows: priorities (a missing priority ranks
below every number), `read_only` (never written), `write_only` (never read, e.g. a backup)
and the store's hard `max_size` (its `total_size` is kept by a database trigger).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Case, F, IntegerField, Q, Value, When

from debusine.server.db.models import File, FileInStore, FileStore, FileStoreInScope, Scope


class NoUploadStoreError(Exception):
    """No store of the scope may receive a file of that size."""


def upload_store(scope: Scope, size: int) -> FileStore:
    """The store of `scope` that receives a new file of `size` bytes."""
    candidate = (
        FileStoreInScope.objects.filter(scope=scope, read_only=False)
        .filter(
            Q(file_store__max_size__isnull=True)
            | Q(file_store__max_size__gte=F("file_store__total_size") + size)
        )
        .select_related("file_store")
        .order_by(F("upload_priority").desc(nulls_last=True), "file_store_id")
        .first()
    )
    if candidate is None:
        raise NoUploadStoreError(f"No file store of scope {scope.name!r} accepts {size} bytes")
    return candidate.file_store


def readable_stores(scope: Scope) -> list[FileStore]:
    """The stores `scope` may read from, best download choice first."""
    links = (
        FileStoreInScope.objects.filter(scope=scope, write_only=False)
        .select_related("file_store")
        .order_by(
            F("download_priority").desc(nulls_last=True),
            F("upload_priority").desc(nulls_last=True),
            "file_store_id",
        )
    )
    return [link.file_store for link in links]


def download_stores(scope: Scope, files: Iterable[File]) -> dict[int, FileStore]:
    """
    For each of `files` held by a readable store of `scope`, the store to serve it from.

    Two queries whatever the number of files: the scope's stores, then one row per file.
    """
    stores = readable_stores(scope)
    file_ids = {file.pk for file in files}
    if not stores or not file_ids:
        return {}
    by_id = {store.pk: store for store in stores}
    rank = Case(
        *(When(store_id=store.pk, then=Value(position)) for position, store in enumerate(stores)),
        output_field=IntegerField(),
    )
    best = (
        FileInStore.objects.filter(file_id__in=file_ids, store_id__in=by_id)
        .annotate(rank=rank)
        .order_by("file_id", "rank")
        .distinct("file_id")
        .values_list("file_id", "store_id")
    )
    return {file_id: by_id[store_id] for file_id, store_id in best}


def download_store(scope: Scope, file: File) -> FileStore | None:
    """The store of `scope` to serve `file` from, or None if no readable store holds it."""
    return download_stores(scope, [file]).get(file.pk)
