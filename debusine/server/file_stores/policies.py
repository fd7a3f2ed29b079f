"""
Which store of a scope receives an upload, and which one serves a download.

The choice follows the scope's `FileStoreInScope` rows: priorities (a missing priority ranks
below every number), `read_only` (never written), `write_only` (never read, e.g. a backup:
filled only by `populate`, so uploads skip it, or the new file could not be downloaded) and
the store's hard `max_size` (its `total_size` is kept by a database trigger). Moving files
between stores (`file_store vacuum`) also respects the soft limits: the store's `soft_max_size`
and the scope's own `soft_max_size` for the share of the store its files take.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Case, F, IntegerField, Q, Sum, Value, When

from debusine.server.db.models import (
    File,
    FileInArtifact,
    FileInStore,
    FileStore,
    FileStoreInScope,
    Scope,
)


class NoUploadStoreError(Exception):
    """No store of the scope may receive a file of that size."""


def scope_usage(scope: Scope, store: FileStore) -> int:
    """Bytes of the files of `scope`'s artifacts that `store` holds (each file counted once)."""
    total = File.objects.filter(
        in_stores__store=store,
        pk__in=FileInArtifact.objects.filter(artifact__workspace__scope=scope).values("file_id"),
    ).aggregate(total=Sum("size"))["total"]
    return int(total or 0)


def upload_candidates(
    scope: Scope,
    size: int,
    *,
    exclude: Iterable[int] = (),
    enforce_soft_limits: bool = False,
    include_write_only: bool = False,
) -> list[FileStoreInScope]:
    """
    The stores of `scope` that may receive a file of `size` bytes, best first.

    Never read-only stores, nor stores that `size` more bytes would take over `max_size`.
    `exclude` leaves stores out by id (the store being drained); `enforce_soft_limits` also
    leaves out stores that would go over their `soft_max_size` or the scope's.
    """
    links = FileStoreInScope.objects.filter(scope=scope, read_only=False).filter(
        Q(file_store__max_size__isnull=True)
        | Q(file_store__max_size__gte=F("file_store__total_size") + size)
    )
    if not include_write_only:
        links = links.filter(write_only=False)
    if enforce_soft_limits:
        links = links.filter(
            Q(file_store__soft_max_size__isnull=True)
            | Q(file_store__soft_max_size__gte=F("file_store__total_size") + size)
        )
    ordered = (
        links.exclude(file_store_id__in=list(exclude))
        .select_related("file_store")
        .order_by(F("upload_priority").desc(nulls_last=True), "file_store_id")
    )
    if not enforce_soft_limits:
        return list(ordered)
    return [
        link
        for link in ordered
        if link.soft_max_size is None
        or scope_usage(scope, link.file_store) + size <= link.soft_max_size
    ]


def upload_store(scope: Scope, size: int) -> FileStore:
    """The store of `scope` that receives a new file of `size` bytes."""
    candidates = upload_candidates(scope, size)
    if not candidates:
        raise NoUploadStoreError(f"No file store of scope {scope.name!r} accepts {size} bytes")
    return candidates[0].file_store


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
