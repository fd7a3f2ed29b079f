"""The guard passes a signal on to a detached process when its own parent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from debusine.testing.processes import process_is_alive, wait_for_exit

# A parent that starts a detached target (its own session, like a daemonized postmaster) and a
# guard for it, prints both PIDs, then waits to be killed.
PARENT = """
import os, signal, subprocess, sys, time
from debusine.testing.processes import terminate_with_parent
# SIGINT back to its default: a shell's background job (as CI may run us) ignores it.
target = subprocess.Popen(
    ["sleep", "300"], start_new_session=True,
    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
)
guard = subprocess.Popen(
    [sys.executable, "-m", "debusine.testing.guard", str(os.getpid()), str(target.pid),
     str(int(signal.SIGINT))],
    start_new_session=True, preexec_fn=terminate_with_parent,
)
print(target.pid, guard.pid, flush=True)
time.sleep(300)
"""


def test_killing_the_parent_stops_the_target() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    target, guard = (int(value) for value in parent.stdout.readline().split())
    try:
        time.sleep(0.5)  # let the guard start and install its handler
        assert process_is_alive(target) and process_is_alive(guard)

        parent.kill()
        parent.wait()

        assert wait_for_exit(target, 10)
        assert wait_for_exit(guard, 10)
    finally:
        for pid in (target, guard):
            if process_is_alive(pid):
                subprocess.run(["kill", "-9", str(pid)], check=False)


def default_sigint() -> None:
    """In the child: SIGINT back to its default (a background job of a shell ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_guard_of_a_parent_already_gone_stops_the_target_at_once() -> None:
    target = subprocess.Popen(["sleep", "300"], preexec_fn=default_sigint)
    # Named parent 1, not this test: as if the parent died before the guard started.
    guard = subprocess.Popen(
        [sys.executable, "-m", "debusine.testing.guard", "1", str(target.pid), "2"]
    )
    try:
        assert guard.wait(timeout=10) == 0
        assert target.wait(timeout=10) == -2
    finally:
        for process in (target, guard):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_guard_ends_when_the_target_stops_first() -> None:
    target = subprocess.Popen(["sleep", "300"])
    guard = subprocess.Popen(
        [sys.executable, "-m", "debusine.testing.guard", str(os.getpid()), str(target.pid), "2"]
    )
    try:
        time.sleep(0.5)
        assert guard.poll() is None
        target.kill()
        target.wait()
        assert guard.wait(timeout=10) == 0
    finally:
        for process in (target, guard):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_bad_arguments_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "debusine.testing.guard", "x"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr
