"""
Read replicas on a real streaming replica: a private primary and replica started from the
machine's PostgreSQL binaries on spare ports, a real server configured with
DEBUSINE_DATABASE_REPLICA_URLS.

Reads are counted on the replica itself (pg_stat_statements, loaded on both clusters): an
anonymous or not-recently-writing caller's GETs run there. A caller who just wrote reads its
write at once (pinned to the primary); a replica whose replay is paused (lagging beyond the
bound) or stopped is left alone, and nothing the client sees changes but latency, also when
it stops under a read in flight; a worker's requests never read the replica.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import requests

from debusine.testing.embedded import PrivatePostgres
from debusine.testing.throwaway import ThrowawayInstance, throwaway_instance

pytestmark = pytest.mark.integration

#: Seconds a caller stays pinned after a write (short, so that the test sees a pin end).
PIN_SECONDS = 3
#: Where "eventually" gives up (waiting, never asserting a duration).
PATIENCE = 60.0

ARTIFACT_READS_SQL = """
SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements
WHERE query LIKE '%%FROM "db_artifact"%%'
    AND dbid = (SELECT oid FROM pg_database WHERE datname = %s)
"""


def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait until `condition()` holds; fail naming `what` if it never does."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.1)


@dataclass
class Clusters:
    primary: PrivatePostgres
    replica: PrivatePostgres


@pytest.fixture(scope="module")
def clusters() -> Iterator[Clusters]:
    primary = PrivatePostgres.create("debusine-test-primary-")
    replica: PrivatePostgres | None = None
    try:
        primary.init()
        primary.configure({"shared_preload_libraries": "'pg_stat_statements'"})
        primary.start()
        with psycopg.connect(primary.url(), autocommit=True) as connection:
            # Its view shows the statements of every database; the replica gets it too.
            connection.execute("CREATE EXTENSION pg_stat_statements")
        replica = primary.start_replica("debusine-test-replica-")
        yield Clusters(primary, replica)
    finally:
        if replica is not None:
            replica.remove()
        primary.remove()


@pytest.fixture(scope="module")
def server(
    clusters: Clusters, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThrowawayInstance]:
    from django.conf import settings

    name = f"test_replicas_{uuid.uuid4().hex[:8]}"
    with throwaway_instance(
        postgres_url=clusters.primary.url(),
        redis_url=settings.DEBUSINE_REDIS_URL,
        data_dir=tmp_path_factory.mktemp("replicas"),
        database_name=name,
        workers=2,
        settings={
            "DEBUSINE_DATABASE_REPLICA_URLS": clusters.replica.url(name),
            "DEBUSINE_DATABASE_REPLICA_MAX_LAG": "1",
            "DEBUSINE_DATABASE_REPLICA_PIN_SECONDS": str(PIN_SECONDS),
            "DEBUSINE_DATABASE_REPLICA_CHECK_INTERVAL": "0.2",
        },
    ) as instance:
        yield instance


class Caller:
    """A contributor's token, and the API calls the scenario makes with it."""

    def __init__(self, server: ThrowawayInstance, username: str) -> None:
        self.base_url = server.base_url
        self.session = requests.Session()
        self.session.headers["Token"] = server.create_contributor(username)

    def create_artifact(self, data: dict[str, Any]) -> int:
        response = self.session.post(
            f"{self.base_url}/api/1.0/artifact/",
            json={"category": "debusine:test", "workspace": "System", "files": {}, "data": data},
        )
        assert response.status_code == 201, response.text
        artifact_id: int = response.json()["id"]
        return artifact_id

    def artifact(self, artifact_id: int) -> requests.Response:
        return self.session.get(f"{self.base_url}/api/1.0/artifact/{artifact_id}/")


def read_from(response: requests.Response) -> str:
    return response.headers.get("X-Debusine-Read-From", "primary")


def artifact_reads(cluster: PrivatePostgres, database: str) -> int:
    """How many queries of the artifact table `cluster` ran for `database`."""
    with psycopg.connect(cluster.url(), autocommit=True) as connection:
        row = connection.execute(ARTIFACT_READS_SQL, (database,)).fetchone()
    assert row is not None
    return int(row[0])


def database_name(server: ThrowawayInstance) -> str:
    return server.database_url.rsplit("/", 1)[1]


def test_reads_go_to_the_replica_and_writers_read_their_writes(
    server: ThrowawayInstance, clusters: Clusters
) -> None:
    writer = Caller(server, "writer")
    reader = Caller(server, "reader")
    database = database_name(server)

    # The writer reads its write at once, whatever the replica has replayed: pinned.
    created = writer.create_artifact({"n": 1})
    response = writer.artifact(created)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"n": 1}
    assert read_from(response) == "primary"

    # Another caller reads from the replica, once it has replayed the write.
    eventually(lambda: reader.artifact(created).status_code == 200, "the replica replays")
    before = artifact_reads(clusters.replica, database)
    for _ in range(10):
        response = reader.artifact(created)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == {"n": 1}
        assert read_from(response) == "replica"
    assert artifact_reads(clusters.replica, database) >= before + 10

    # The writer's pin ends: it reads from the replica too.
    eventually(lambda: read_from(writer.artifact(created)) == "replica", "the pin ends")

    # Anonymous visitors' requests read from the replica as well.
    anonymous = requests.get(f"{server.base_url}/api/1.0/work-request/", timeout=30)
    assert anonymous.status_code < 500, anonymous.text
    assert read_from(anonymous) == "replica"


def test_a_lagging_replica_is_left_alone(server: ThrowawayInstance, clusters: Clusters) -> None:
    writer = Caller(server, "lag-writer")
    reader = Caller(server, "lag-reader")
    with psycopg.connect(clusters.replica.url(), autocommit=True) as connection:
        connection.execute("SELECT pg_wal_replay_pause()")
        try:
            created = writer.create_artifact({"written": "while the replica lags"})
            # The replica has received the write but not replayed it: beyond the 1 s bound
            # (the last transaction it replayed is older), the primary answers everyone.
            eventually(lambda: reader.artifact(created).status_code == 200, "the primary answers")
            response = reader.artifact(created)
            assert response.json()["data"] == {"written": "while the replica lags"}
            assert read_from(response) == "primary"
        finally:
            connection.execute("SELECT pg_wal_replay_resume()")
    eventually(lambda: read_from(reader.artifact(created)) == "replica", "the replica is back")


def test_stopping_the_replica_changes_nothing_visible(
    server: ThrowawayInstance, clusters: Clusters
) -> None:
    writer = Caller(server, "stop-writer")
    reader = Caller(server, "stop-reader")
    created = writer.create_artifact({"kept": True})
    eventually(lambda: read_from(reader.artifact(created)) == "replica", "replica reads")

    clusters.replica.stop()
    try:
        # Every request right after the stop is answered, from the primary: no error reaches
        # the client (a pooled connection to the stopped replica is replaced, or the request
        # answered again from the primary).
        for index in range(20):
            response = reader.artifact(created)
            assert response.status_code == 200, f"request {index}: {response.text}"
            assert response.json()["data"] == {"kept": True}
            assert read_from(response) == "primary"
        later = writer.create_artifact({"while": "the replica is down"})
        assert reader.artifact(later).json()["data"] == {"while": "the replica is down"}
    finally:
        clusters.replica.start()
    eventually(lambda: read_from(reader.artifact(later)) == "replica", "the replica is used again")
    assert reader.artifact(later).json()["data"] == {"while": "the replica is down"}


WAITING_ARTIFACT_READS_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = %s AND wait_event_type = 'Lock' AND query LIKE '%%FROM "db_artifact"%%'
"""
REPLAYED_LOCK_SQL = """
SELECT count(*) FROM pg_locks
WHERE relation = 'db_artifact'::regclass AND mode = 'AccessExclusiveLock' AND granted
"""


def count(url: str, sql: str, *parameters: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(sql, parameters).fetchone()
    assert row is not None
    return int(row[0])


def test_a_replica_stopped_under_a_read_in_flight_changes_nothing_visible(
    server: ThrowawayInstance, clusters: Clusters
) -> None:
    """
    The read is held in flight on the replica by a lock: an ACCESS EXCLUSIVE lock taken on the
    primary is replayed on the replica, where reads of the table wait for it. The replica is
    stopped under the waiting read; the server answers the request again from the primary
    (seen waiting for the same lock there), which answers once the lock is released.
    """
    writer = Caller(server, "flight-writer")
    reader = Caller(server, "flight-reader")
    created = writer.create_artifact({"in flight": True})
    eventually(lambda: read_from(reader.artifact(created)) == "replica", "replica reads")
    name = database_name(server)
    primary_url, replica_url = clusters.primary.url(name), clusters.replica.url(name)
    try:
        with (
            psycopg.connect(primary_url) as lock_holder,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            lock_holder.execute("LOCK TABLE db_artifact IN ACCESS EXCLUSIVE MODE")
            eventually(lambda: count(replica_url, REPLAYED_LOCK_SQL) == 1, "the lock replayed")
            in_flight = pool.submit(reader.artifact, created)
            eventually(
                lambda: count(replica_url, WAITING_ARTIFACT_READS_SQL, name) == 1,
                "the read waiting on the replica",
            )
            clusters.replica.stop()
            eventually(
                lambda: count(primary_url, WAITING_ARTIFACT_READS_SQL, name) == 1,
                "the read answered again from the primary, waiting for the lock there",
            )
            assert not in_flight.done()
            lock_holder.rollback()
            response = in_flight.result(timeout=PATIENCE)
    finally:
        clusters.replica.start()
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"in flight": True}
    assert read_from(response) == "primary"
    eventually(lambda: read_from(reader.artifact(created)) == "replica", "the replica used again")


def test_workers_read_from_the_primary(server: ThrowawayInstance) -> None:
    activation = server.create_worker_activation("replica-worker")
    token = uuid.uuid4().hex * 2
    session = requests.Session()
    registered = session.post(
        f"{server.base_url}/api/1.0/worker/register/",
        json={"token": token, "fqdn": "replica-worker"},
        headers={"Token": activation},
    )
    assert registered.status_code == 201, registered.text
    session.headers["Token"] = token
    # Past the pin of the registration (a write): a worker's own reads still never go to the
    # replica, whichever endpoint they use.
    time.sleep(PIN_SECONDS + 0.5)
    for path in ("work-request/get-next-for-worker/", "whoami/", "work-request/"):
        response = session.get(f"{server.base_url}/api/1.0/{path}")
        assert response.status_code < 500, response.text
        assert read_from(response) == "primary", path
