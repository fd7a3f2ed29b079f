"""
File stores: one interface (`base.FileBackend`), one module per backend, chosen by the
`backend` of each `FileStore` row; `policies` chooses which store of a scope to use.
"""

from __future__ import annotations

from debusine.server.db.models import FileStore, FileStoreBackend
from debusine.server.file_stores.base import FileBackend, FileStoreError
from debusine.server.file_stores.local import LocalBackend
from debusine.server.file_stores.memory import MemoryBackend
from debusine.server.file_stores.s3 import S3Backend

BACKENDS: dict[str, type[FileBackend]] = {
    FileStoreBackend.LOCAL: LocalBackend,
    FileStoreBackend.MEMORY: MemoryBackend,
    FileStoreBackend.S3: S3Backend,
}


def get_backend(store: FileStore) -> FileBackend:
    """The backend implementing `store`."""
    try:
        backend_class = BACKENDS[store.backend]
    except KeyError:
        raise FileStoreError(
            f"File store {store.name!r}: backend {store.backend!r} is not supported"
        ) from None
    return backend_class(store)


__all__ = ["BACKENDS", "FileBackend", "FileStoreError", "get_backend"]
