"""
Harness for integration tests: a real server process on a throwaway database.

`debusine_server` (one per xdist worker, for the whole session) creates a database named after
the worker and a random suffix on the PostgreSQL the tests use, migrates it with
`debusine-admin migrate` in a subprocess, creates a contributor of the `System` workspace with
a token through `debusine-admin` commands, and starts gunicorn with a uvicorn worker on a free
port with its own data directory. Tests get its base URL and the token key; afterwards the
server is stopped by PID and the database dropped.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from debusine.server.devstack import ProcessSpec, Supervisor, gunicorn_argv, wait_until_answering
from debusine.server.project import instance
from debusine.server.project.embedded import (
    EmbeddedServiceError,
    drop_database,
    ensure_database_exists,
    free_port,
)

STARTUP_TIMEOUT = 60.0
TEST_USERNAME = "integration"


@dataclass(frozen=True)
class LiveServer:
    """A running server process and a way in."""

    base_url: str  # e.g. http://127.0.0.1:41234 (no trailing slash)
    token: str  # key of an enabled token of a contributor of the System workspace
    username: str
    database_url: str
    data_dir: Path
    pid: int
    log: Path

    @property
    def api_url(self) -> str:
        """The `api-url` a client would be configured with."""
        return f"{self.base_url}/api"

    def admin(self, *args: str) -> str:
        """Run `debusine-admin` against this server's database; return its output."""
        return run_admin(server_environment(self.database_url, self.data_dir), *args)


def server_environment(database_url: str, data_dir: Path) -> dict[str, str]:
    """Environment of every process of the throwaway instance."""
    from django.conf import settings

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "debusine.server.project.settings",
        "DEBUSINE_DATABASE_URL": database_url,
        "DEBUSINE_REDIS_URL": settings.DEBUSINE_REDIS_URL,
        "DEBUSINE_DATA_DIR": str(data_dir),
        "DEBUSINE_SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUSINE_DEBUG": "false",
    }


def run_admin(environment: dict[str, str], *args: str) -> str:
    """Run `debusine-admin ARGS`; fail the test with its output if it fails."""
    command = [sys.executable, "-m", "debusine.server.management.main", *args]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"debusine-admin {' '.join(args)} exited with {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def throwaway_database_url(worker_id: str) -> str:
    """URL of a database name no other test process uses, on the tests' PostgreSQL."""
    from django.conf import settings

    name = f"test_live_{worker_id}_{uuid.uuid4().hex[:8]}"
    return instance.with_database_name(settings.DEBUSINE_DATABASE_URL, name)


def start_server(environment: dict[str, str], log: Path) -> tuple[Supervisor, str]:
    """Start gunicorn on a free port (retrying if another process took it); return its URL."""
    last_error: EmbeddedServiceError | None = None
    for _attempt in range(3):
        port = free_port()
        supervisor = Supervisor()
        spec = ProcessSpec("server", gunicorn_argv(f"127.0.0.1:{port}", workers=1))
        supervisor.start(spec, env=environment, output=log)
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answering(f"{base_url}/api/1.0/whoami/", supervisor, STARTUP_TIMEOUT)
        except EmbeddedServiceError as exc:
            supervisor.stop_all()
            last_error = exc
            continue
        return supervisor, base_url
    pytest.fail(f"the server did not start: {last_error}\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def debusine_server(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[LiveServer]:
    """A real server (gunicorn + uvicorn) on a migrated throwaway database."""
    database_url = throwaway_database_url(worker_id)
    data_dir = tmp_path_factory.mktemp("live-server")
    environment = server_environment(database_url, data_dir)
    log = data_dir / "server.log"
    ensure_database_exists(database_url)
    supervisor: Supervisor | None = None
    try:
        run_admin(environment, "migrate", "--no-input", "-v", "0")
        run_admin(environment, "create_user", TEST_USERNAME, f"{TEST_USERNAME}@example.org")
        group = f"{TEST_USERNAME}-contributors"
        run_admin(environment, "group", "create", group)
        run_admin(environment, "group", "members", group, "--add", TEST_USERNAME)
        run_admin(environment, "workspace", "grant_role", "System", "contributor", group)
        token = run_admin(environment, "create_token", TEST_USERNAME).strip()
        supervisor, base_url = start_server(environment, log)
        _spec, process = supervisor.running[0]
        yield LiveServer(
            base_url=base_url,
            token=token,
            username=TEST_USERNAME,
            database_url=database_url,
            data_dir=data_dir,
            pid=process.pid,
            log=log,
        )
    finally:
        if supervisor is not None:
            supervisor.stop_all()
        drop_database(database_url)
