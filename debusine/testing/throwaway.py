"""
A throwaway instance: a fresh database, a data directory and real server processes.

Integration tests and benchmarks both need "a real server on a database of its own": this is
the one way to get it. The database is created on a PostgreSQL server the caller names,
migrated by `debusine-admin migrate` in a subprocess, and dropped at the end; the server is
gunicorn with uvicorn workers on a free port, stopped by PID.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from debusine.server.project import instance
from debusine.testing.devstack import (
    STARTUP_TIMEOUT,
    ProcessSpec,
    Supervisor,
    celery_worker_argv,
    gunicorn_argv,
    scheduling_processes,
    wait_until_answering,
)
from debusine.testing.embedded import (
    EmbeddedServiceError,
    drop_database,
    ensure_database_exists,
)
from debusine.testing.processes import free_port


class ThrowawayError(Exception):
    """The instance could not be set up; the message says which step failed and why."""


def instance_environment(
    database_url: str, redis_url: str, data_dir: Path, redis_key_prefix: str
) -> dict[str, str]:
    """Environment of every process of a throwaway instance."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "debusine.server.project.settings",
        "DEBUSINE_DATABASE_URL": database_url,
        "DEBUSINE_REDIS_URL": redis_url,
        # Its own Celery queues and Channels groups, whoever else uses that Redis.
        "DEBUSINE_REDIS_KEY_PREFIX": redis_key_prefix,
        "DEBUSINE_DATA_DIR": str(data_dir),
        "DEBUSINE_SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUSINE_DEBUG": "false",
    }


def run_admin(environment: dict[str, str], *args: str) -> str:
    """Run `debusine-admin ARGS` in a subprocess; return its output, raise if it fails."""
    command = [sys.executable, "-m", "debusine.server.management.main", *args]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ThrowawayError(
            f"debusine-admin {' '.join(args)} exited with {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


@dataclass(frozen=True)
class ThrowawayInstance:
    """A running throwaway instance."""

    base_url: str  # e.g. http://127.0.0.1:41234 (no trailing slash)
    database_url: str
    data_dir: Path
    environment: dict[str, str]
    pid: int  # the gunicorn arbiter
    log: Path
    supervisor: Supervisor  # every process of the instance

    def process_pids(self, name: str) -> list[int]:
        """PIDs of the instance's running processes called `name` ("server", "scheduler"...)."""
        return [
            process.pid
            for spec, process in self.supervisor.running
            if spec.name == name and process.poll() is None
        ]

    @property
    def api_url(self) -> str:
        """The `api-url` a client or worker would be configured with."""
        return f"{self.base_url}/api"

    def admin(self, *args: str) -> str:
        """Run `debusine-admin` against this instance; return its output."""
        return run_admin(self.environment, *args)

    def create_worker_activation(self, fqdn: str) -> str:
        """Pre-create a worker (`debusine-admin worker create`); return its activation token."""
        return self.admin("worker", "create", fqdn).strip().splitlines()[-1]

    def create_contributor(self, username: str, workspace: str = "System") -> str:
        """Create a user who contributes to `workspace` (via a group); return a token key."""
        group = f"{username}-contributors"
        self.admin("create_user", username, f"{username}@example.org")
        self.admin("group", "create", group)
        self.admin("group", "members", group, "--add", username)
        self.admin("workspace", "grant_role", workspace, "contributor", group)
        return self.admin("create_token", username).strip()


def _start_server(environment: dict[str, str], log: Path, workers: int) -> tuple[Supervisor, str]:
    """Start gunicorn on a free port (again on another one if the port was taken)."""
    last_error: EmbeddedServiceError | None = None
    for _attempt in range(3):
        port = free_port()
        supervisor = Supervisor()
        spec = ProcessSpec("server", gunicorn_argv(f"127.0.0.1:{port}", workers=workers))
        supervisor.start(spec, env=environment, output=log)
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answering(f"{base_url}/api/1.0/whoami/", supervisor, STARTUP_TIMEOUT)
        except EmbeddedServiceError as exc:
            supervisor.stop_all()
            last_error = exc
            continue
        return supervisor, base_url
    raise ThrowawayError(f"the server did not start: {last_error}\n{log.read_text()[-3000:]}")


@contextmanager
def throwaway_instance(
    *,
    postgres_url: str,
    redis_url: str,
    data_dir: Path,
    name_prefix: str = "debusine_throwaway",
    workers: int = 1,
    scheduling: bool = False,
    workflows: bool = False,
    settings: dict[str, str] | None = None,
    database_name: str | None = None,
) -> Iterator[ThrowawayInstance]:
    """
    Create, migrate and serve a fresh database; drop it and stop the server at the end.

    `postgres_url` names any database of the PostgreSQL server to use: only its server part
    matters. `data_dir` (existing, empty) holds the store, uploads and the logs.
    `scheduling` also starts the scheduler, which runs Celery beat as a thread, the server tasks
    and workflow orchestrators (log `scheduler.log`). `workflows` also starts a Celery worker on
    the `celery` and `workflows` queues, so that orchestrators run beside scheduling passes
    (log `celery.log`).
    `settings` are extra environment variables of every process (`DEBUSINE_*` settings).
    `database_name` chooses the database's name (default: `name_prefix` and a random suffix),
    for settings that must name it (a replica's URL).
    """
    name = database_name or f"{name_prefix}_{uuid.uuid4().hex[:8]}"
    database_url = instance.with_database_name(postgres_url, name)
    environment = {
        **instance_environment(database_url, redis_url, data_dir, redis_key_prefix=name),
        **(settings or {}),
    }
    log = data_dir / "server.log"
    ensure_database_exists(database_url)
    supervisor: Supervisor | None = None
    try:
        run_admin(environment, "migrate", "--no-input", "-v", "0")
        supervisor, base_url = _start_server(environment, log, workers)
        _spec, process = supervisor.running[0]
        if scheduling:
            for spec in scheduling_processes():
                supervisor.start(spec, env=environment, output=data_dir / f"{spec.name}.log")
        if workflows:
            supervisor.start(
                ProcessSpec("celery", celery_worker_argv()),
                env=environment,
                output=data_dir / "celery.log",
            )
        yield ThrowawayInstance(
            base_url=base_url,
            database_url=database_url,
            data_dir=data_dir,
            environment=environment,
            pid=process.pid,
            log=log,
            supervisor=supervisor,
        )
    finally:
        if supervisor is not None:
            supervisor.stop_all()
        drop_database(database_url)
