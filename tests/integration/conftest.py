"""
Harness for integration tests: a real server process on a throwaway database.

`debusine_server` (one per xdist worker, for the whole session) is a
`debusine.testing.throwaway` instance on the PostgreSQL and Redis the tests use, plus a
contributor of the `System` workspace with a token, made with `debusine-admin` commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from debusine.testing.redis_server import PrivateRedis, RedisServerError
from debusine.testing.throwaway import ThrowawayError, ThrowawayInstance, throwaway_instance

TEST_USERNAME = "integration"


@dataclass(frozen=True)
class LiveServer:
    """A running throwaway instance and a way in."""

    instance: ThrowawayInstance
    token: str  # key of an enabled token of a contributor of the System workspace
    username: str

    @property
    def base_url(self) -> str:
        return self.instance.base_url

    @property
    def api_url(self) -> str:
        return self.instance.api_url

    def admin(self, *args: str) -> str:
        """Run `debusine-admin` against this server's database; return its output."""
        return self.instance.admin(*args)


@pytest.fixture(scope="session")
def debusine_server(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[LiveServer]:
    """A real server (gunicorn + uvicorn) on a migrated throwaway database."""
    from django.conf import settings

    try:
        with throwaway_instance(
            postgres_url=settings.DEBUSINE_DATABASE_URL,
            redis_url=settings.DEBUSINE_REDIS_URL,
            data_dir=tmp_path_factory.mktemp("live-server"),
            name_prefix=f"test_live_{worker_id}",
        ) as instance:
            token = instance.create_contributor(TEST_USERNAME)
            yield LiveServer(instance=instance, token=token, username=TEST_USERNAME)
    except ThrowawayError as error:
        pytest.fail(str(error))


@contextmanager
def scheduling_instance(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    settings: dict[str, str] | None = None,
    *,
    workflows: bool = False,
) -> Iterator[ThrowawayInstance]:
    """
    A real server with its scheduler and beat (`settings`: extra DEBUSINE_* variables), and
    with `workflows`, a Celery worker that runs workflow orchestrators.
    """
    from django.conf import settings as django_settings

    try:
        with throwaway_instance(
            postgres_url=django_settings.DEBUSINE_DATABASE_URL,
            redis_url=django_settings.DEBUSINE_REDIS_URL,
            data_dir=tmp_path_factory.mktemp(name),
            name_prefix=f"test_{name}",
            scheduling=True,
            workflows=workflows,
            settings=settings,
        ) as running:
            yield running
    except ThrowawayError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def instance(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[ThrowawayInstance]:
    """A real server with its scheduler and beat, shared by the tests of one module."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with scheduling_instance(tmp_path_factory, f"{module}_{worker_id}") as running:
        yield running


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A `redis-server` of the module's own, for tests that stop and restart it."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except RedisServerError as error:
        pytest.fail(str(error))
    try:
        yield server
    finally:
        server.stop()
