"""
Debian's real `debusine on-work-request-completed` 0.11.3 against our completion websocket.

The server runs with its scheduler, and our own worker daemon runs the noops. The reference
client listens in the background (its own process, stopped by PID) and runs a small script
for each completion; the script appends `ID RESULT` to a file. The client saves the last
`completed_at` to its `--last-completed-at` file, and a listener started again with that file
must replay exactly what completed while none was running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from debusine.testing.reference_client import ReferenceClient
from debusine.testing.throwaway import ThrowawayInstance
from debusine.testing.worker import LOG_CONNECTED, WorkerProcess, start_worker
from tests.compat.conftest import write_client_config
from tests.integration.conftest import scheduling_instance
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.compat

#: What the 0.11.3 client logs (on stderr) once the server sent `connected`.
LOG_LISTENER_CONNECTED = "Connected!"
#: A quiet spell long enough for a duplicate or a stray event to show up.
QUIET_SECONDS = 2.0


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[ThrowawayInstance]:
    """Our server with its scheduler and beat, for this module's tests only."""
    with scheduling_instance(tmp_path_factory, f"reference_completion_{worker_id}") as running:
        yield running


@pytest.fixture(scope="module")
def user_token(server: ThrowawayInstance) -> str:
    return server.create_contributor("completion-listener")


@pytest.fixture(scope="module")
def noop_worker(
    server: ThrowawayInstance, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """Our worker daemon, enabled at once through an activation token, running the noops."""
    activation = server.create_worker_activation("completion.example")
    worker = start_worker(
        server.api_url, tmp_path_factory.mktemp("noop-worker"), activation_token=activation
    )
    try:
        worker.wait_for_log(LOG_CONNECTED)
        yield worker
    finally:
        worker.stop()


def write_recorder(path: Path, events: Path) -> Path:
    """An executable that appends its two arguments (`ID RESULT`) as a line to `events`."""
    # 0.11.3 takes COMMAND as one word, checked with shutil.which: no arguments of its own.
    path.write_text(f'#!/bin/sh\necho "$1 $2" >> "{events}"\n')
    path.chmod(0o755)
    return path


class ReferenceListener:
    """A running `debusine on-work-request-completed`, its log (stderr) kept in a file."""

    def __init__(self, client: ReferenceClient, home: Path, *args: str) -> None:
        self.log = home / f"listener-{time.monotonic_ns()}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                client.command("on-work-request-completed", *args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=client.environment(home),
                cwd=home,
                start_new_session=True,
            )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            assert self.process.poll() is None, f"the listener exited:\n{self.log_text()}"
            assert time.monotonic() < deadline, (
                f"no {text!r} after {timeout} s:\n{self.log_text()}"
            )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop it by PID; it must still have been running (it never exits on its own)."""
        still_running = self.process.poll() is None
        if still_running:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        assert still_running, f"the listener had exited:\n{self.log_text()}"


def recorded(events: Path) -> list[str]:
    return events.read_text().splitlines() if events.exists() else []


def wait_for_events(
    events: Path, expected: list[str], listener: ReferenceListener, timeout: float = 30
) -> None:
    """Wait until `events` holds `expected` lines; then check nothing more arrives."""
    deadline = time.monotonic() + timeout
    while len(recorded(events)) < len(expected):
        assert listener.process.poll() is None, f"the listener exited:\n{listener.log_text()}"
        assert time.monotonic() < deadline, (
            f"only {recorded(events)} after {timeout} s:\n{listener.log_text()}"
        )
        time.sleep(0.1)
    time.sleep(QUIET_SECONDS)
    assert recorded(events) == expected, listener.log_text()


def saved_cursor(cursor: Path) -> datetime | None:
    """The instant the client saved, parsed (it writes Python's isoformat, we send `Z`)."""
    value = json.loads(cursor.read_text())["last_completed_at"]
    return None if value is None else datetime.fromisoformat(value)


def completed_at(user: RestUser, work_request_id: int) -> datetime:
    work_request = user.wait_until(work_request_id, "completed")
    return datetime.fromisoformat(work_request["completed_at"].replace("Z", "+00:00"))


def test_runs_the_command_per_completion_and_replays_what_it_missed(
    server: ThrowawayInstance,
    user_token: str,
    noop_worker: WorkerProcess,
    installed_reference_client: ReferenceClient,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    write_client_config(home, api_url=server.api_url, token=user_token)
    events = tmp_path / "events"
    recorder = write_recorder(tmp_path / "record", events)
    cursor = tmp_path / "last-completed-at.json"
    user = RestUser(server, user_token)
    # (--workspace takes one or more names: the option after it ends the list.)
    arguments = ("--workspace", "System", "--last-completed-at", str(cursor), str(recorder))

    listener = ReferenceListener(installed_reference_client, home, *arguments)
    try:
        listener.wait_for_log(LOG_LISTENER_CONNECTED)
        # The client creates the missing file at once, with no cursor: nothing is replayed.
        assert saved_cursor(cursor) is None
        succeeding = user.create("noop", {"result": True})
        first_completed_at = completed_at(user, succeeding)
        failing = user.create("noop", {"result": False})
        last_completed_at = completed_at(user, failing)
        assert last_completed_at > first_completed_at
        wait_for_events(events, [f"{succeeding} success", f"{failing} failure"], listener)
        assert saved_cursor(cursor) == last_completed_at
    finally:
        listener.stop()

    # While no listener runs, one more completes.
    missed = user.create("noop", {"result": True})
    missed_completed_at = completed_at(user, missed)

    listener = ReferenceListener(installed_reference_client, home, *arguments)
    try:
        listener.wait_for_log(LOG_LISTENER_CONNECTED)
        wait_for_events(
            events,
            [f"{succeeding} success", f"{failing} failure", f"{missed} success"],
            listener,
        )
        assert saved_cursor(cursor) == missed_completed_at
        # The command ran once per event, and the websocket was opened once (no reconnects).
        assert listener.log_text().count("Executing ") == 1
        assert listener.log_text().count(LOG_LISTENER_CONNECTED) == 1
    finally:
        listener.stop()


@pytest.mark.parametrize(
    ("token", "workspace", "reason"),
    [
        ("f" * 64, "System", "not an enabled user token"),
        (None, "no-such-workspace", "no-such-workspace"),
    ],
    ids=["unknown-token", "unknown-workspace"],
)
def test_refused_listener_logs_the_reason_and_runs_nothing(
    server: ThrowawayInstance,
    user_token: str,
    installed_reference_client: ReferenceClient,
    tmp_path: Path,
    token: str | None,
    workspace: str,
    reason: str,
) -> None:
    home = tmp_path / "home"
    write_client_config(home, api_url=server.api_url, token=token or user_token)
    events = tmp_path / "events"
    recorder = write_recorder(tmp_path / "record", events)

    run = installed_reference_client.run(
        "on-work-request-completed", str(recorder), "--workspace", workspace, home=home
    )

    # 0.11.3 logs a `connection_rejected` without reason code, and when the server then closes
    # the websocket it simply ends, with exit status 0 (it retries only on connection errors).
    assert run.returncode == 0, run.stderr
    assert "Disconnected. Reason: " in run.stderr
    assert reason in run.stderr
    assert LOG_LISTENER_CONNECTED not in run.stderr
    assert not events.exists()
