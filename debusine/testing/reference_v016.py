"""
Debian's `debusine` client and `debusine-worker` 0.16, run for the compatibility tests.

0.16 needs Python >= 3.13, which this (Debian 12) machine lacks, so the packages are installed
in a root filesystem of the release that ships them (trixie, with trixie-backports), built once
by `mmdebstrap` and kept in `/var/cache/debusine-tests/` (or `$DEBUSINE_V016_ROOT_CACHE`). The
build takes a file lock, so parallel test workers build it once; later runs need no network.
Delete the root's directory to build it again.

Programs run in that root with `chroot`, inside a private mount namespace (`unshare --mount`):
the host's `/tmp`, `/dev` and a fresh `/proc` are mounted into the root there, so the tests'
temporary directories have the same paths inside and outside; the network is the host's, so
`127.0.0.1` reaches the test server. Nothing of the machine's configuration changes (the
mounts vanish with the namespace). This needs root, as the compatibility tests already do.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from debusine.testing.reference_worker import write_reference_worker_config
from debusine.testing.worker import WorkerProcess

RELEASE = "trixie"
BACKPORTS = "trixie-backports"
ARCHIVE_URL = "http://deb.debian.org/debian"
CACHE_ENVIRONMENT_VARIABLE = "DEBUSINE_V016_ROOT_CACHE"
ARCHIVE_ENVIRONMENT_VARIABLE = "DEBUSINE_REFERENCE_CLIENT_ARCHIVE"
DEFAULT_CACHE = Path("/var/cache/debusine-tests")
ROOT_NAME = "debusine-0.16-trixie"
COMPLETE_MARKER = "packages.txt"
#: The packages wanted from backports; the rest of the closure comes from trixie.
BACKPORTED = ("debusine-client", "debusine-worker", "python3-debusine")
#: Other packages the worker runs (arch-test for its metadata) or the tests need.
EXTRA_PACKAGES = ("ca-certificates", "arch-test", "procps")
#: Debusine's minimum for the 0.16 series; the root must have at least this.
MINIMUM_VERSION = (0, 16)
UNPRIVILEGED_USER = "debusine-worker"


class ReferenceV016Error(Exception):
    """The 0.16 root could not be built; the message says which step failed and why."""


def _cache_directory() -> Path:
    configured = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    return Path(configured) if configured else DEFAULT_CACHE


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _parse_version(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split("~")[0].split("-")[0].split("."):
        digits = "".join(character for character in part if character.isdigit())
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


@dataclass(frozen=True)
class V016Root:
    """The built root: `root` holds trixie with the 0.16 packages installed."""

    root: Path
    version: str  # the installed python3-debusine version, e.g. "0.16.2-1~bpo13+1"

    def command(self, *args: str, chdir: Path | None = None, user: str | None = None) -> list[str]:
        """
        The host command line running `args` in the root (as `user` with `setpriv`, if given).

        The host's /tmp is visible at /tmp inside, so host temporary paths work unchanged.
        """
        inner = ["chroot", str(self.root)]
        if user is not None:
            inner += ["setpriv", "--reuid", user, "--regid", user, "--init-groups"]
        inner += ["/usr/bin/env", "-C", str(chdir or "/"), *args]
        script = (
            'set -e; r="$1"; shift; '
            'mount --rbind /tmp "$r/tmp"; mount --rbind /dev "$r/dev"; '
            'mount -t proc proc "$r/proc"; exec "$@"'
        )
        namespace = ["unshare", "--mount", "--propagation", "private"]
        return [*namespace, "sh", "-c", script, "sh", str(self.root), *inner]

    def environment(self, home: Path) -> dict[str, str]:
        """A minimal environment for a run with HOME `home` (a host /tmp path)."""
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "COLUMNS": "200",
            "TERM": "dumb",
        }

    def client_command(self, *args: str, cwd: Path | None = None) -> list[str]:
        return self.command("/usr/bin/debusine", *args, chdir=cwd)

    def run_client(
        self,
        *args: str,
        home: Path,
        stdin: str | None = None,
        cwd: Path | None = None,
        timeout: float = 90.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `debusine ARGS` in the root (never raises on a non-zero exit)."""
        return subprocess.run(
            self.client_command(*args, cwd=cwd or home),
            input=stdin if stdin is not None else "",
            env=self.environment(home),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def worker_command(self) -> list[str]:
        """`debusine-worker` as the Debian package's unit starts it (run as root here)."""
        return self.command("/usr/bin/debusine-worker")


def _mmdebstrap(target: Path, archive_url: str) -> None:
    if shutil.which("mmdebstrap") is None:
        install = subprocess.run(
            ["apt-get", "install", "-y", "mmdebstrap"], capture_output=True, text=True, check=False
        )
        if install.returncode != 0:
            raise ReferenceV016Error(f"apt-get install mmdebstrap failed:\n{install.stderr}")
    includes = [f"{name}/{BACKPORTS}" for name in BACKPORTED] + list(EXTRA_PACKAGES)
    command = [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        "--skip=cleanup/apt/lists",
        f"--include={','.join(includes)}",
        RELEASE,
        str(target),
        f"deb {archive_url} {RELEASE} main",
        f"deb {archive_url} {BACKPORTS} main",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if result.returncode != 0:
        raise ReferenceV016Error(
            f"mmdebstrap failed ({result.returncode}). Is {archive_url} reachable?\n"
            f"$ {' '.join(command)}\n{result.stderr[-4000:]}"
        )


def _installed_version(root: Path) -> str:
    result = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Version}", BACKPORTED[-1]],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ReferenceV016Error(f"python3-debusine is not installed in {root}: {result.stderr}")
    return result.stdout.strip()


def v016_root(cache: Path | None = None, archive_url: str | None = None) -> V016Root:
    """The 0.16 root: from the cache, else built now (under a lock) with mmdebstrap."""
    if os.geteuid() != 0:
        raise ReferenceV016Error("running the 0.16 client needs root (chroot in a namespace)")
    cache = cache if cache is not None else _cache_directory()
    archive_url = archive_url or os.environ.get(ARCHIVE_ENVIRONMENT_VARIABLE) or ARCHIVE_URL
    target = cache / ROOT_NAME
    marker = cache / f"{ROOT_NAME}.{COMPLETE_MARKER}"
    if not marker.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(cache / f"{ROOT_NAME}.lock"):
            if not marker.exists():
                with tempfile.TemporaryDirectory(prefix="build-", dir=cache) as scratch:
                    staging = Path(scratch) / "root"
                    _mmdebstrap(staging, archive_url)
                    shutil.rmtree(target, ignore_errors=True)
                    staging.rename(target)
                marker.write_text(f"{_installed_version(target)}\n")
    version = _installed_version(target)
    if _parse_version(version)[:2] < MINIMUM_VERSION:
        raise ReferenceV016Error(f"{target} holds python3-debusine {version}, not 0.16")
    return V016Root(root=target, version=version)


def start_v016_worker(
    root: V016Root,
    api_url: str,
    directory: Path,
    *,
    activation_token: str | None = None,
    log_level: str = "DEBUG",
) -> WorkerProcess:
    """
    Start the 0.16 `debusine-worker` in the root for `api_url`, with HOME `directory/home`
    (its configuration under `~/.config/debusine/worker/`), logging to `directory/worker.log`
    (what it prints goes to `directory/worker.out`). `directory` is a host /tmp path, seen at
    the same path inside the root. Stop it with `WorkerProcess.stop()` (its PID is the
    daemon's: the namespace and chroot wrappers exec it).
    """
    directory.chmod(0o755)
    home = directory / "home"
    log_file = directory / "worker.log"
    config_dir = write_reference_worker_config(
        home, api_url, log_file, activation_token=activation_token, log_level=log_level
    )
    output_file = directory / "worker.out"
    with output_file.open("ab") as output:
        process = subprocess.Popen(
            root.worker_command(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=root.environment(home),
            start_new_session=True,
        )
    return WorkerProcess(process, config_dir, log_file, output_file)
