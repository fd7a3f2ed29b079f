"""
The `local` provider: workers are `debusine-worker` processes of this machine.

Each launch gets a home of its own (`<home_directory>/<worker name>/`: `config/` with
`config.ini` and the activation token, `cache/`, `worker.log`), wiped at every launch so the
worker registers afresh with the new activation token. The process is detached from the
provisioner (a daemon of its own session, adopted by init), so it outlives the pass that
started it. Its environment carries the pool's and the worker's names: `list_running` finds
a pool's processes through /proc, whether or not the database remembers them.

A file `interruption-notice` in a worker's home plays the provider's spot-interruption
notice (what tests and operators use to rehearse one).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from debusine.server.db.worker_pool_specs import LocalSpecification
from debusine.server.worker_pools.providers.base import (
    LaunchedInstance,
    LaunchRequest,
    ProviderError,
    RunningInstance,
)

POOL_VARIABLE = "DEBUSINE_WORKER_POOL"
WORKER_VARIABLE = "DEBUSINE_WORKER_POOL_WORKER"
HOME_VARIABLE = "DEBUSINE_WORKER_POOL_HOME"
INTERRUPTION_NOTICE = "interruption-notice"


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 (state) on; empty for a process gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may hold spaces: fields after its closing parenthesis.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return []
    return fields


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused PID apart)."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def process_environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    environment = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            environment[key.decode(errors="replace")] = value.decode(errors="replace")
    return environment


def parse_instance_id(instance_id: str) -> tuple[int, str]:
    kind, _, rest = instance_id.partition(":")
    pid, _, start = rest.partition(":")
    if kind != "local" or not pid.isdigit():
        raise ProviderError(f"{instance_id!r} is not a local instance id")
    return int(pid), start


class LocalProvider:
    """Starts and stops worker processes on this machine."""

    def __init__(self, specification: LocalSpecification, *, data_dir: str) -> None:
        self.specification = specification
        self.home_directory = Path(specification.home_directory or Path(data_dir) / "worker-pools")

    def home(self, pool_name: str, worker_name: str) -> Path:
        return self.home_directory / pool_name / worker_name

    def launch(self, request: LaunchRequest) -> LaunchedInstance:
        home = self.home(request.pool_name, request.worker_name)
        if home.exists():
            shutil.rmtree(home)
        config = home / "config"
        config.mkdir(parents=True)
        (config / "config.ini").write_text(
            "[General]\n"
            f"api-url = {self.specification.api_url}\n"
            f"cache-dir = {home / 'cache'}\n"
            f"log-file = {home / 'worker.log'}\n"
            f"log-level = {self.specification.log_level}\n",
            encoding="utf-8",
        )
        token_file = config / "activation-token"
        token_file.write_text(request.activation_token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        environment = {
            **os.environ,
            POOL_VARIABLE: request.pool_name,
            WORKER_VARIABLE: request.worker_name,
            HOME_VARIABLE: str(home),
        }
        # A shell in a session of its own starts the worker in the background and exits:
        # the worker is adopted by init, never a zombie of the provisioner.
        command = [
            "setsid",
            "sh",
            "-c",
            'exec "$@" </dev/null >>"$DEBUSINE_WORKER_POOL_HOME/worker.out" 2>&1 & echo $!',
            "sh",
            sys.executable,
            "-m",
            "debusine.worker",
            "--config-dir",
            str(config),
        ]
        try:
            started = subprocess.run(
                command, env=environment, capture_output=True, text=True, check=True, timeout=30
            )
            pid = int(started.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            raise ProviderError(f"cannot start a worker process: {error}") from None
        start = process_start_time(pid) or ""
        return LaunchedInstance(
            instance_id=f"local:{pid}:{start}", data={"pid": pid, "home": str(home)}
        )

    def _alive(self, pid: int, start: str) -> bool:
        current = process_start_time(pid)
        return current is not None and (not start or current == start)

    def terminate(self, instance_id: str) -> None:
        pid, start = parse_instance_id(instance_id)
        if not self._alive(pid, start):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.specification.stop_timeout_seconds
        while time.monotonic() < deadline:
            if not self._alive(pid, start):
                return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return

    def list_running(self, pool_name: str) -> list[RunningInstance]:
        tagged: dict[int, tuple[list[str], dict[str, str]]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            environment = process_environment(pid)
            if environment.get(POOL_VARIABLE) != pool_name:
                continue
            fields = _stat_fields(pid)
            if fields:
                tagged[pid] = (fields, environment)
        running = []
        for pid, (fields, environment) in sorted(tagged.items()):
            # The worker's own children (task processes) inherit the tag: not instances.
            if int(fields[1]) in tagged:
                continue
            start = fields[19]
            home = environment.get(HOME_VARIABLE)
            running.append(
                RunningInstance(
                    instance_id=f"local:{pid}:{start}",
                    worker_name=environment.get(WORKER_VARIABLE),
                    interruption_notice=bool(home)
                    and (Path(str(home)) / INTERRUPTION_NOTICE).exists(),
                )
            )
        return running
