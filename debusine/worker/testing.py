"""
Start real `debusine-worker` processes for tests and benchmarks, and stop them by PID.

Each worker gets its own configuration directory (config.ini, optional activation token), its
own log file, and its own process group. No Django here: end-to-end tests that also run the
server use this next to `debusine.server.throwaway`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: Log lines the daemon writes, for `WorkerProcess.wait_for_log()`.
LOG_CONNECTED = "connected to "
LOG_REJECTED = "the server sent connection_rejected"
LOG_REGISTERED = "registered as "


def write_worker_config(
    directory: Path,
    api_url: str,
    *,
    activation_token: str | None = None,
    token: str | None = None,
) -> Path:
    """Make `directory` a worker configuration directory for `api_url`; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.ini").write_text(f"[General]\napi-url = {api_url}\n", encoding="utf-8")
    for name, secret in (("activation-token", activation_token), ("token", token)):
        if secret is not None:
            path = directory / name
            path.write_text(f"{secret}\n", encoding="utf-8")
            path.chmod(0o600)
    return directory


@dataclass
class WorkerProcess:
    """A running worker daemon."""

    process: subprocess.Popen[bytes]
    config_dir: Path
    log_file: Path
    output_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def token(self) -> str | None:
        """The token the worker registered (None until it has)."""
        try:
            return (self.config_dir / "token").read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, *, timeout: float = 30, count: int = 1) -> None:
        """Wait until `text` appears `count` times in the log; raise if the worker exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text().count(text) >= count:
                return
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with {self.process.returncode} before logging "
                    f"{text!r}:\n{self.log_text()[-3000:]}{self.output_file.read_text()[-2000:]}"
                )
            time.sleep(0.05)
        raise TimeoutError(
            f"the worker did not log {text!r} {count} time(s) within {timeout} s:\n"
            f"{self.log_text()[-3000:]}"
        )

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (what systemd sends), then SIGKILL if it lingers; return the exit status."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
        return self.process.wait()

    def kill(self) -> int:
        """SIGKILL the daemon alone (its task dies with it); return the exit status."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        return self.process.wait()


def start_worker(
    api_url: str,
    directory: Path,
    *,
    activation_token: str | None = None,
    token: str | None = None,
    log_level: str = "DEBUG",
    environment: dict[str, str] | None = None,
) -> WorkerProcess:
    """
    Start `python -m debusine.worker` with its configuration in `directory/config/` and its
    log in `directory/worker.log` (stdout and stderr in `directory/worker.out`).
    """
    config_dir = write_worker_config(
        directory / "config", api_url, activation_token=activation_token, token=token
    )
    log_file = directory / "worker.log"
    output_file = directory / "worker.out"
    command = [
        sys.executable,
        "-m",
        "debusine.worker",
        "--config-dir",
        str(config_dir),
        "--log-file",
        str(log_file),
        "--log-level",
        log_level,
    ]
    with open(output_file, "ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(environment or {})},
            # Its own group: a Ctrl-C in the test's terminal does not reach it.
            start_new_session=True,
        )
    return WorkerProcess(process, config_dir, log_file, output_file)
