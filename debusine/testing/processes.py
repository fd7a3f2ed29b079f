"""
Local processes and ports for the development stack, throwaway instances and tests.

One definition of each small helper that starting, watching and stopping local services
needs: a free TCP port, whether something answers on one, whether a PID is alive, and how to
stop a child (or a process that is not ours) without leaving it behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def answers(address: tuple[str, int], timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at `address`."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def terminate_with_parent() -> None:
    """
    In a child about to exec: ask Linux to SIGTERM it when its parent dies.

    The stack stops its children itself on SIGINT/SIGTERM; this covers the parent being
    killed outright (SIGKILL), which would otherwise leave them running in their own sessions.
    """
    if sys.platform == "linux":
        PR_SET_PDEATHSIG = 1  # noqa: N806 (the name in <sys/prctl.h>)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def process_is_alive(pid: int) -> bool:
    """Whether a process with this PID exists (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(FileNotFoundError, IndexError):
        # A zombie has exited; only its parent's wait() is missing.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until process `pid` (not our child) is gone; return whether it is."""
    deadline = time.monotonic() + timeout
    while process_is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a child we started: SIGTERM, wait up to `timeout`, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
