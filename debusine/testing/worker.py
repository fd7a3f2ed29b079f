"""
Start real `debusine-worker` processes for tests and benchmarks, and stop them by PID.

Each worker gets its own configuration directory (config.ini, optional activation token), its
own log file, its own cache directory and its own process group. No Django here: end-to-end
tests that also run the server use this next to `debusine.testing.throwaway`.

A worker can also run as another user (`start_worker(..., user="debusine-worker")`), as
production workers do and as sbuild in unshare mode requires (it refuses to run as root). That
user cannot execute the project's virtualenv (its Python lives under /root), so the worker
then runs with a virtualenv of the system Python holding only the worker's dependencies
(`worker_venv()`, cached under /var/cache/debusine-tests) and this checkout on PYTHONPATH.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

#: The checkout this module belongs to (what PYTHONPATH points at for a worker of another user).
CHECKOUT = Path(__file__).resolve().parents[2]
#: Where worker virtualenvs are cached between test runs.
TEST_CACHE = Path("/var/cache/debusine-tests")
#: The Python a worker of another user runs with (readable by every user).
SYSTEM_PYTHON = Path("/usr/bin/python3")
#: Subordinate ID range size `ensure_worker_user` gives (what useradd gives by default).
SUBID_COUNT = 65536

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
    cache_dir: Path | None = None,
) -> Path:
    """Make `directory` a worker configuration directory for `api_url`; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    text = f"[General]\napi-url = {api_url}\n"
    if cache_dir is not None:
        text += f"cache-dir = {cache_dir}\n"
    (directory / "config.ini").write_text(text, encoding="utf-8")
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
    #: The user the daemon runs as (None: the caller's).
    user: str | None = None
    #: For a worker of another user: the directory owned by that user holding its
    #: configuration, log and cache, removed by `stop()`/`kill()` (the log is copied first).
    private_directory: Path | None = None

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

    def uid(self) -> int:
        """The real user ID the daemon process runs with (from /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
        raise RuntimeError(f"no Uid line in /proc/{self.pid}/status")

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (what systemd sends), then SIGKILL if it lingers; return the exit status."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self._finished(self.process.wait(timeout))
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
        return self._finished(self.process.wait())

    def kill(self) -> int:
        """SIGKILL the daemon alone (its task dies with it); return the exit status."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        return self._finished(self.process.wait())

    def _finished(self, status: int) -> int:
        """Once the daemon has exited: keep its log, remove its private directory."""
        private, self.private_directory = self.private_directory, None
        if private is not None:
            kept = self.output_file.with_name("worker.log")
            if self.log_file.exists():
                shutil.copyfile(self.log_file, kept)
            self.log_file = kept
            _remove_tree(private)
        return status


def start_worker(
    api_url: str,
    directory: Path,
    *,
    activation_token: str | None = None,
    token: str | None = None,
    log_level: str = "DEBUG",
    environment: dict[str, str] | None = None,
    user: str | None = None,
) -> WorkerProcess:
    """
    Start `python -m debusine.worker` with its configuration in `directory/config/`, its cache
    in `directory/cache/` and its log in `directory/worker.log` (stdout and stderr in
    `directory/worker.out`).

    With `user` (which must exist: see `ensure_worker_user`) the daemon runs as that user, with
    the Python of `worker_venv()`, this checkout on PYTHONPATH, and only the `environment`
    given (plus PATH, HOME, USER, LANG): its configuration, cache and log are then in a
    directory of its own under the system's temporary directory (`private_directory`),
    since `directory` may not be reachable by it; the log is copied to `directory/worker.log`
    when the daemon is stopped.
    """
    output_file = directory / "worker.out"
    if user is None:
        base = directory
        python = sys.executable
        child_environment = {**os.environ, **(environment or {})}
        private = None
    else:
        account = pwd.getpwnam(user)
        python = str(worker_venv() / "bin" / "python")
        private = Path(tempfile.mkdtemp(prefix=f"debusine-worker-{user}-"))
        base = private
        child_environment = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": account.pw_dir,
            "USER": user,
            "LOGNAME": user,
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(CHECKOUT),
            "PYTHONDONTWRITEBYTECODE": "1",
            **(environment or {}),
        }
    config_dir = write_worker_config(
        base / "config",
        api_url,
        activation_token=activation_token,
        token=token,
        cache_dir=base / "cache",
    )
    log_file = base / "worker.log"
    if user is not None:
        assert private is not None
        _chown_tree(private, user)
    command = [
        python,
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
            env=child_environment,
            cwd=private,
            # Its own group: a Ctrl-C in the test's terminal does not reach it.
            start_new_session=True,
            # Set in the child before exec, so the PID is the daemon's own.
            user=user,
            group=pwd.getpwnam(user).pw_gid if user is not None else None,
            extra_groups=[] if user is not None else None,
        )
    return WorkerProcess(process, config_dir, log_file, output_file, user, private)


def _chown_tree(root: Path, user: str) -> None:
    account = pwd.getpwnam(user)
    for path in [root, *root.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)


def _remove_tree(path: Path) -> None:
    """Remove a worker's directory: files its tasks made in a user namespace need one too."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)


# --- A worker running as another user ---------------------------------------------------------


def worker_dependencies(pyproject: Path = CHECKOUT / "pyproject.toml") -> list[str]:
    """The requirements of a worker: the project's dependencies plus its `worker` extra."""
    with pyproject.open("rb") as stream:
        project = tomllib.load(stream)["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["worker"]]


def worker_venv(cache: Path = TEST_CACHE) -> Path:
    """
    A virtualenv of the system Python with `worker_dependencies()` installed, readable and
    executable by every user: `cache/worker-venv-<hash of the dependency list>`, made once
    (about a minute, from PyPI) and reused while the list is unchanged. Safe to call from
    parallel test processes.
    """
    dependencies = worker_dependencies()
    digest = hashlib.sha256(
        "\n".join([str(SYSTEM_PYTHON), *sorted(dependencies)]).encode()
    ).hexdigest()[:16]
    venv = cache / f"worker-venv-{digest}"
    complete = venv / ".complete"
    if complete.exists():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".worker-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # an attempt that died half-way
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-cache-dir",
                *dependencies,
            ],
            check=True,
        )
        complete.write_text("\n".join(dependencies) + "\n", encoding="utf-8")
    return venv


def _next_subid_start(files: list[Path]) -> int:
    end = 100000
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                end = max(end, int(parts[1]) + int(parts[2]))
    return end


def _has_subids(path: Path, user: str, uid: int) -> bool:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return False
    return any(line.split(":")[0] in (user, str(uid)) for line in lines if line.strip())


def ensure_worker_user(name: str = "debusine-worker") -> pwd.struct_passwd:
    """
    Make sure the system user `name` exists (home `/var/lib/<name>`) with subordinate user
    and group ID ranges (what the unshare executor and sbuild need); return its entry.
    Idempotent; needs root for what is missing.
    """
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--create-home",
                "--home-dir",
                f"/var/lib/{name}",
                "--shell",
                "/bin/sh",
                name,
            ],
            check=True,
        )
        account = pwd.getpwnam(name)
    subuid, subgid = Path("/etc/subuid"), Path("/etc/subgid")
    missing = []
    start = _next_subid_start([subuid, subgid])
    if not _has_subids(subuid, name, account.pw_uid):
        missing += ["--add-subuids", f"{start}-{start + SUBID_COUNT - 1}"]
    if not _has_subids(subgid, name, account.pw_uid):
        missing += ["--add-subgids", f"{start}-{start + SUBID_COUNT - 1}"]
    if missing:
        subprocess.run(["usermod", *missing, name], check=True)
    return account
