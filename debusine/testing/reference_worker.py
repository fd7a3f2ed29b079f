"""
Start Debian's real `debusine-worker` 0.11.3 daemon for the compatibility tests.

The daemon runs exactly as the Debian package starts it (`/usr/bin/python3
/usr/bin/debusine-worker`, from the unpacked packages of `reference_client`), with HOME set to
a private directory so that it reads `$HOME/.config/debusine/worker/` (config.ini, and the
`token` and `activation-token` files) rather than `/etc/debusine/worker/`. The running process
is a `debusine.testing.worker.WorkerProcess`, so tests wait on its log and stop it by PID the
same way as our own worker.

With `user` (e.g. `debusine-worker`, since sbuild in unshare mode refuses root) the daemon runs
as that user with a minimal environment, and HOME, configuration and log live in a private
directory owned by it (`WorkerProcess.private_directory`, removed when it is stopped, its log
copied next to `worker.out` first): the test's temporary directory may not be reachable by it.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from pathlib import Path

from debusine.testing.reference_client import ReferenceWorker
from debusine.testing.worker import WorkerProcess

#: Lines the 0.11.3 daemon logs (its own wording, not ours).
LOG_CONNECTED = "Connected to "
LOG_TOKEN_DISABLED = "is disabled. Debusine admin"  # noqa: S105 (a log line, not a secret)
LOG_METADATA_SENT = "Sent dynamic_metadata"
LOG_NO_WORK = "No work request available"


def worker_config_dir(home: Path) -> Path:
    """Where the daemon looks first for its configuration, under HOME."""
    return home / ".config" / "debusine" / "worker"


def write_reference_worker_config(
    home: Path,
    api_url: str,
    log_file: Path,
    *,
    activation_token: str | None = None,
    log_level: str = "DEBUG",
) -> Path:
    """Write `config.ini` (and an `activation-token` file, mode 0600); return the directory."""
    config_dir = worker_config_dir(home)
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.ini").write_text(
        f"[General]\napi-url = {api_url}\nlog-file = {log_file}\nlog-level = {log_level}\n"
    )
    if activation_token is not None:
        activation = config_dir / "activation-token"
        activation.write_text(f"{activation_token}\n")
        # The daemon refuses (exit 3) a token file that group or others may read.
        activation.chmod(0o600)
    return config_dir


def start_reference_worker(
    worker: ReferenceWorker,
    api_url: str,
    directory: Path,
    *,
    activation_token: str | None = None,
    user: str | None = None,
    log_level: str = "DEBUG",
) -> WorkerProcess:
    """
    Start the daemon for `api_url` with HOME `directory/home`, logging to
    `directory/worker.log` (anything it prints goes to `directory/worker.out`).

    With `user`, it runs as that user, with HOME and log in a private directory of its own
    (see the module's documentation).
    """
    output_file = directory / "worker.out"
    private = None
    if user is None:
        base = directory
        environment = worker.environment(base / "home")
    else:
        account = pwd.getpwnam(user)
        private = base = Path(tempfile.mkdtemp(prefix=f"reference-worker-{user}-"))
        environment = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(base / "home"),
            "USER": user,
            "LOGNAME": user,
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(worker.python_path),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    home = base / "home"
    log_file = base / "worker.log"
    config_dir = write_reference_worker_config(
        home, api_url, log_file, activation_token=activation_token, log_level=log_level
    )
    if user is not None:
        for path in [base, *base.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
    with output_file.open("ab") as output:
        process = subprocess.Popen(
            worker.command(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=home,
            # Its own process group: a Ctrl-C in the test's terminal does not reach it.
            start_new_session=True,
            user=user,
            group=account.pw_gid if user is not None else None,
            extra_groups=[] if user is not None else None,
        )
    return WorkerProcess(process, config_dir, log_file, output_file, user, private)
