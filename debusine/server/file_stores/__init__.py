"""
File stores: one interface (`base.FileBackend`), one module per backend, chosen by the
`backend` of each `FileStore` row; `policies` chooses which store of a scope to use.

A backend's module is imported the first time a store of that backend is used: a server
without an S3 store never imports boto3 (tens of MiB in every process).
"""

from __future__ import annotations

import importlib

from debusine.server.db.models import FileStore, FileStoreBackend
from debusine.server.file_stores.base import FileBackend, FileStoreError

#: The class implementing each backend, as "module:class", imported when first needed.
BACKENDS: dict[str, str] = {
    FileStoreBackend.LOCAL: "debusine.server.file_stores.local:LocalBackend",
    FileStoreBackend.MEMORY: "debusine.server.file_stores.memory:MemoryBackend",
    FileStoreBackend.S3: "debusine.server.file_stores.s3:S3Backend",
}


def backend_class(backend: str) -> type[FileBackend]:
    """The class implementing `backend` (importing its module the first time)."""
    module_name, class_name = BACKENDS[backend].split(":")
    found: type[FileBackend] = getattr(importlib.import_module(module_name), class_name)
    return found


def get_backend(store: FileStore) -> FileBackend:
    """The backend implementing `store`."""
    if store.backend not in BACKENDS:
        raise FileStoreError(
            f"File store {store.name!r}: backend {store.backend!r} is not supported"
        )
    return backend_class(store.backend)(store)


__all__ = ["BACKENDS", "FileBackend", "FileStoreError", "backend_class", "get_backend"]
