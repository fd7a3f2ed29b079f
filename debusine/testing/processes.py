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


def port_is_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could not listen on `host:port` now (something answers or binds it)."""
    if answers((host, port)):
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do: a port whose old connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


#: State of a listening socket in /proc/net/tcp{,6} (TCP_LISTEN in the kernel's numbering).
_TCP_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP `port` (any address, IPv4 or IPv6), from /proc/net."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part) or "?"


def port_holders(port: int) -> list[tuple[int, str]]:
    """
    (PID, command line) of each process listening on TCP `port`, as far as /proc shows.

    Only the processes whose file descriptors we may read are found (all of them as root, our
    own otherwise); an empty list means "unknown", not "nobody".
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    holders: list[tuple[int, str]] = []
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            descriptors = list((process / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to read
        targets: set[str] = set()
        for descriptor in descriptors:
            with contextlib.suppress(OSError):  # closed since the listing
                targets.add(str(descriptor.readlink()))
        if targets & wanted:
            pid = int(process.name)
            holders.append((pid, _command_line(pid)))
    return sorted(holders)


def describe_port_holders(port: int) -> str:
    """`port N`, followed by who holds it when /proc tells (for one-line error messages)."""
    holders = port_holders(port)
    if not holders:
        return f"port {port}"
    shown = ", ".join(f"PID {pid} ({command[:80]})" for pid, command in holders[:3])
    more = f" and {len(holders) - 3} more" if len(holders) > 3 else ""
    return f"port {port}, held by {shown}{more}"


def descendants(pid: int) -> set[int]:
    """PIDs of every process below `pid` (from /proc: the parent PID is field 4 of stat)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found
