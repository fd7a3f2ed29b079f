"""
A private `redis-server` on a free loopback port, for tests whose fault is Redis's.

Tests that stop, restart or flush Redis must never touch the machine's shared one: each starts
its own here (the Debian `redis-server` binary), stops it by PID and starts it again on the same
port, so that the processes using it reconnect to the same URL. By default nothing is persisted:
every restart loses the data. A `persistent` one saves its data when stopped (SIGTERM) and loads
it when started again, as a production Redis with snapshots does; `kill()` (SIGKILL) then loses
what changed since the last save.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from debusine.testing.processes import free_port


class RedisServerError(Exception):
    """The private Redis could not be started; the message says why."""


@dataclass
class PrivateRedis:
    """A `redis-server` on a free loopback port, stopped and restarted by PID."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: Save the data on a graceful stop and load it at start (an RDB snapshot in `directory`).
    persistent: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        """Start it (again, on the same port) and wait until it answers PING."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisServerError("redis-server is not installed (Debian package redis-server)")
        argv = [
            executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            # A save point makes SIGTERM write a snapshot; none is ever reached in a test.
            "--save", "86400 1000000" if self.persistent else "",
            "--appendonly", "no",
            "--dir", str(self.directory),
        ]  # fmt: skip
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError as error:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RedisServerError(
                            f"redis-server did not start on port {self.port}: {error}"
                        ) from None
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL it: nothing is saved, and a later start has only an earlier snapshot."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def forget_data(self) -> None:
        """Delete its snapshot (while stopped): the next start begins empty."""
        (self.directory / "dump.rdb").unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
