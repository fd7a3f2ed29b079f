"""
Several servers behind one load balancer: what a server checks before it starts.

With DEBUSINE_MULTI_SERVER on, this server is one of several sharing PostgreSQL, Redis and the
file stores: a file one of them stored must be readable by all. A Local (or Memory) store
lives on one machine, so a scope using one would hand out files that the other servers do not
have: the server refuses to start (gunicorn's `on_starting`) and `debusine-admin check` reports
debusine.E009, both naming the stores and the scopes that use them.

The query runs on a connection of its own (psycopg, not Django's): the gunicorn arbiter must
fork its workers holding no database connection (see `gunicorn_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Backends whose contents live on one machine only.
MACHINE_LOCAL_BACKENDS = ("Local", "Memory")

LOCAL_STORES_SQL = """
SELECT store.name, store.backend, array_agg(scope.name ORDER BY scope.name)
FROM db_filestoreinscope AS link
JOIN db_filestore AS store ON store.id = link.file_store_id
JOIN db_scope AS scope ON scope.id = link.scope_id
WHERE store.backend = ANY(%s)
GROUP BY store.name, store.backend
ORDER BY store.name
"""


class MultiServerError(RuntimeError):
    """A server configured as one of several cannot serve this configuration."""


@dataclass(frozen=True)
class LocalStoreInUse:
    """A store whose files live on one machine, and the scopes that use it."""

    name: str
    backend: str
    scopes: list[str]

    def describe(self) -> str:
        return f"{self.name} ({self.backend}, used by scope {', '.join(self.scopes)})"


def local_stores_in_use(database_url: str) -> list[LocalStoreInUse]:
    """The machine-local stores some scope uses, read from the database at `database_url`."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as connection:
        rows = connection.execute(LOCAL_STORES_SQL, (list(MACHINE_LOCAL_BACKENDS),)).fetchall()
    return [LocalStoreInUse(name, backend, list(scopes)) for name, backend, scopes in rows]


def refusal(stores: list[LocalStoreInUse]) -> str:
    """Why a server of several does not start, and what to do, in one line."""
    return (
        "DEBUSINE_MULTI_SERVER is on but scopes use file stores that live on one machine: "
        + "; ".join(store.describe() for store in stores)
        + ". Every server must reach every file: move the files to an S3 store"
        " (debusine-admin scope add_file_store, file_store vacuum with drain) and remove"
        " these stores from their scopes (scope remove_file_store)."
    )


def check_can_start(multi_server: bool, database_url: str) -> None:
    """Raise MultiServerError when this server, one of several, would serve local stores."""
    if not multi_server:
        return
    stores = local_stores_in_use(database_url)
    if stores:
        raise MultiServerError(refusal(stores))
