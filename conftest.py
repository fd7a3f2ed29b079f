"""Fixtures shared by every test: the playground and authenticated clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Every run lists its skips; `make test` also fails on unexpected ones (--fail-on-skip).
pytest_plugins = ["debusine.testing.skip_guard"]

if TYPE_CHECKING:
    from debusine.server.db.models import User, Worker, WorkRequest
    from debusine.testing.moto import MotoS3Server
    from debusine.testing.playground import Playground


@pytest.fixture
def playground(db: None) -> Playground:
    """Factories for test data, in the default scope and workspace."""
    from debusine.testing.playground import Playground

    return Playground()


@pytest.fixture(autouse=True)
def no_token_failure_limit(settings: Any) -> None:
    """
    In-process tests of parallel test workers share one client address (127.0.0.1) and one
    Redis key prefix: their refused tokens would add up to a 429 in unrelated tests. The tests
    of the limit itself turn it back on (debusine/server/api/tests/test_token_failures.py).
    """
    settings.DEBUSINE_TOKEN_FAILURE_LIMIT = 0


@pytest.fixture
def user(playground: Playground) -> User:
    """A user who contributes to the default workspace."""
    user = playground.create_user("alice")
    playground.grant(user, playground.workspace)
    return user


@pytest.fixture
def user_token(playground: Playground, user: User) -> str:
    """An enabled token key of `user`."""
    return playground.create_user_token(user)


@pytest.fixture
def file_directories(settings: Any, tmp_path: Path) -> Path:
    """Point the `Default` local store and the partial uploads at a fresh temporary directory."""
    settings.DEBUSINE_STORE_DIRECTORY = tmp_path / "store"
    settings.DEBUSINE_UPLOAD_DIRECTORY = tmp_path / "uploads"
    return tmp_path


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3Server]:
    """A moto S3 server on a loopback port, shared by the tests of one test process."""
    from debusine.testing.moto import MotoS3Server

    with MotoS3Server() as server:
        yield server


@pytest.fixture
def start_work_request(playground: Playground) -> Callable[..., WorkRequest]:
    """
    `start_work_request(work_request, worker=None)`: assign a pending work request to `worker`
    (a new enabled worker by default) and start it, the way the scheduler and get-next do;
    return it reloaded.
    """
    from debusine.server.work_requests import transitions
    from debusine.server.work_requests.worker_tokens import WorkerCaller

    def start(work_request: WorkRequest, worker: Worker | None = None) -> WorkRequest:
        if worker is None:
            worker, _key = playground.create_worker(f"worker-for-{work_request.pk}")
        assert transitions.assign([(work_request.pk, worker.pk)]) == [(work_request.pk, worker.pk)]
        started = transitions.start_next(WorkerCaller(worker.pk, worker.name, worker.concurrency))
        assert started is not None and started.id == work_request.pk
        work_request.refresh_from_db()
        return work_request

    return start


@pytest.fixture(scope="session")
def buildd_tarball() -> Path:
    """
    The bookworm buildd environment as a zstd tarball, made once per machine (about 30 s; see
    debusine.testing.environments), for the tests that run Debian tools in it.
    """
    import shutil

    from debusine.testing.environments import BUILDD_TARBALL, buildd_tarball

    if shutil.which("mmdebstrap") is None and not BUILDD_TARBALL.is_file():
        pytest.skip(f"mmdebstrap is not installed to make {BUILDD_TARBALL}")
    return buildd_tarball()
