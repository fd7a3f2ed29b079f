"""The server's database connections stay bounded however many requests it serves."""

from __future__ import annotations

import threading

import psycopg
import requests

from tests.integration.conftest import LiveServer

REQUESTS_PER_THREAD = 100
THREADS = 4


def server_connections(server: LiveServer) -> int:
    """Connections to the server's database, other than this one."""
    with psycopg.connect(server.instance.database_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_connections_are_pooled_not_leaked(debusine_server: LiveServer) -> None:
    # Under ASGI each request runs in a thread of its own: a connection kept per thread would
    # leave one connection behind per request.
    url = f"{debusine_server.api_url}/1.0/work-request/"
    statuses: list[int] = []

    def load() -> None:
        with requests.Session() as session:
            session.headers["Token"] = debusine_server.token
            for _ in range(REQUESTS_PER_THREAD):
                statuses.append(session.get(url, timeout=30).status_code)

    threads = [threading.Thread(target=load) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * (REQUESTS_PER_THREAD * THREADS)
    from django.conf import settings

    # One gunicorn worker: at most its pool, whatever the number of requests served.
    assert server_connections(debusine_server) <= settings.DEBUSINE_DATABASE_POOL_SIZE
