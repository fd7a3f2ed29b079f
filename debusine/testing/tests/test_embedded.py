"""Tests of how PostgreSQL and Redis are chosen, and of the embedded Redis and database helpers."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from debusine.server.project import instance
from debusine.testing import embedded, processes
from debusine.testing.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServiceError,
    provide_services,
)


@pytest.fixture
def scratch_database_url() -> Iterator[str]:
    """The URL of a database that does not exist yet on the tests' server; dropped after."""
    url = instance.with_database_name(
        settings.DEBUSINE_DATABASE_URL, f"test_embedded_{uuid.uuid4().hex[:10]}"
    )
    yield url
    embedded.drop_database(url)


@pytest.fixture
def nothing_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend nothing answers on the well-known local ports (point them at a closed port)."""
    closed = ("127.0.0.1", processes.free_port())
    monkeypatch.setattr(embedded, "LOCAL_POSTGRES", closed)
    monkeypatch.setattr(embedded, "LOCAL_REDIS", closed)


def test_configured_urls_are_used_as_given(tmp_path: Path) -> None:
    services = provide_services(
        tmp_path,
        database_name="ignored",
        configured_database_url="postgresql://db.example/prod",
        configured_redis_url="redis://cache.example:6380/1",
    )
    assert services.database_url == "postgresql://db.example/prod"
    assert services.redis_url == "redis://cache.example:6380/1"
    assert services.embedded_postgres is None and services.embedded_redis is None
    assert not (tmp_path / instance.EMBEDDED_POSTGRES_DIR).exists()


def test_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServiceError, match="must be one of auto, always, never"):
        provide_services(tmp_path, database_name="x", mode="sometimes")


def test_never_mode_without_services_says_what_is_missing(
    tmp_path: Path, nothing_local: None
) -> None:
    with pytest.raises(EmbeddedServiceError, match=r"no PostgreSQL configured .*=never"):
        provide_services(tmp_path, database_name="x", mode="never")


@pytest.mark.skipif(
    not processes.answers(embedded.LOCAL_POSTGRES) or not processes.answers(embedded.LOCAL_REDIS),
    reason="needs PostgreSQL and Redis on 127.0.0.1",
)
def test_local_services_are_preferred_and_the_database_created(tmp_path: Path) -> None:
    name = f"test_local_{uuid.uuid4().hex[:10]}"
    services = provide_services(tmp_path, database_name=name)
    try:
        assert services.database_url == f"postgresql://127.0.0.1:5432/{name}"
        assert services.redis_url == "redis://127.0.0.1:6379/0"
        assert services.embedded_postgres is None and services.embedded_redis is None
        # The database exists now: creating it again is a no-op.
        embedded.ensure_database_exists(services.database_url)
    finally:
        embedded.drop_database(services.database_url)


def test_ensure_database_exists_creates_once(scratch_database_url: str) -> None:
    import psycopg

    embedded.ensure_database_exists(scratch_database_url)
    embedded.ensure_database_exists(scratch_database_url)
    with psycopg.connect(scratch_database_url) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_drop_database_removes_it_and_tolerates_a_missing_one(scratch_database_url: str) -> None:
    import psycopg

    embedded.ensure_database_exists(scratch_database_url)
    embedded.drop_database(scratch_database_url)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(scratch_database_url).close()
    embedded.drop_database(scratch_database_url)


def test_ensure_database_exists_fails_in_one_line() -> None:
    with pytest.raises(EmbeddedServiceError) as caught:
        embedded.ensure_database_exists("postgresql://nobody@127.0.0.1:1/nothing")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cannot create database 'nothing' on postgresql://")


def test_embedded_redis_starts_answers_and_stops(tmp_path: Path) -> None:
    redis_server = EmbeddedRedis(tmp_path)
    url = redis_server.start()
    pid = redis_server.pid
    assert pid is not None
    assert url.startswith("redis://127.0.0.1:") and url != instance.DEFAULT_REDIS_URL
    assert embedded.redis_answers(url)
    redis_server.stop()
    assert not processes.process_is_alive(pid)
    assert not embedded.redis_answers(url)
    redis_server.stop()  # stopping twice is harmless


def test_embedded_redis_is_chosen_when_nothing_answers(
    tmp_path: Path, nothing_local: None
) -> None:
    services = provide_services(
        tmp_path, database_name="x", configured_database_url="postgresql://db.example/x"
    )
    try:
        assert services.embedded_redis is not None
        assert embedded.redis_answers(services.redis_url)
    finally:
        services.stop()
    assert services.embedded_redis is None


def test_embedded_postgres_recognises_its_own_url(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path)
    socket_url = f"postgresql://postgres@/debusine?host={postgres.pgdata}"
    assert not postgres.serves(socket_url)  # not initialised
    postgres.pgdata.mkdir()
    (postgres.pgdata / "PG_VERSION").write_text("16\n")
    assert postgres.serves(socket_url)
    assert not postgres.serves("postgresql://127.0.0.1:5432/debusine")
    assert not postgres.serves("postgresql://postgres@/debusine?host=/run/postgresql")
    assert postgres.running_pid() is None


def test_command_does_not_start_postgres_for_other_urls(tmp_path: Path) -> None:
    assert embedded.start_postgres_for_command(tmp_path, settings.DEBUSINE_DATABASE_URL) is None
    assert not (tmp_path / instance.EMBEDDED_POSTGRES_DIR).exists()


def test_running_pid_ignores_a_stale_pid_file(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path)
    postgres.pgdata.mkdir()
    # A PID that existed and is gone: the one of a child we already reaped.
    child = subprocess.Popen(["true"])
    child.wait()
    (postgres.pgdata / "postmaster.pid").write_text(f"{child.pid}\n{postgres.pgdata}\n")
    assert postgres.running_pid() is None
    (postgres.pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{postgres.pgdata}\n")
    assert postgres.running_pid() == os.getpid()


def test_devstack_is_running_reads_the_pid_file(tmp_path: Path) -> None:
    assert not embedded.devstack_is_running(tmp_path)
    instance.write_recorded(tmp_path, instance.DEVSTACK_PID_FILE, str(os.getpid()))
    assert embedded.devstack_is_running(tmp_path)
