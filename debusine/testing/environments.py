"""
The build environment the Debian tasks' tests run in, made once per machine.

`buildd_tarball()` returns `BUILDD_TARBALL` (a bookworm amd64 `--variant=buildd` system as a
zstd tarball, what the unshare executor, sbuild, lintian, autopkgtest and piuparts tests
unpack), making it first when it is missing or older than `KEPT_FOR`:

- from the xz tarball the Debian pipeline test keeps (`PIPELINE_ENVIRONMENT`, see
  tests/integration/debian_pipeline.py) when a recent one is there, re-compressed with zstd
  (a few seconds);
- else with `mmdebstrap` from the mirror this machine's APT uses (about 30 s), in unshare mode,
  as the unprivileged worker user when we are root, as the mmdebstrap task runs on a worker.

Several processes may ask at once (pytest-xdist workers, test runs of other checkouts): one
makes the tarball under an exclusive lock on `LOCK_FILE`, under a temporary name renamed into
place once complete, while the others wait for the lock and then find it. A tarball that is
due for renewal but cannot be remade (no network) is used as it is, with a warning.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

from debusine.tasks.mmdebstrap import default_mirror
from debusine.testing.worker import TEST_CACHE, ensure_worker_user

CODENAME = "bookworm"
ARCHITECTURE = "amd64"
VARIANT = "buildd"
NAME = f"{CODENAME}-{ARCHITECTURE}-{VARIANT}"
#: The tarball the tests use.
BUILDD_TARBALL = TEST_CACHE / f"{NAME}.tar.zst"
#: Held (exclusively) by whoever makes BUILDD_TARBALL.
LOCK_FILE = TEST_CACHE / f".{NAME}.lock"
#: Where tests/integration/debian_pipeline.py keeps the environment it bootstrapped through
#: the server (`system.tar.xz` and its artifact data, `data.json`).
PIPELINE_ENVIRONMENT = TEST_CACHE / "environments" / NAME
PIPELINE_TARBALL = "system.tar.xz"
#: How long a kept environment is used before it is made again (the archive moves on: an old
#: system would install outdated packages, or fail to fetch them).
KEPT_FOR = 7 * 24 * 3600
#: The user mmdebstrap runs as when we are root (it needs subordinate ID ranges).
WORKER_USER = "debusine-worker"
BOOTSTRAP_TIMEOUT = 1200


class EnvironmentBuildError(Exception):
    """The environment could not be made."""


def is_recent(path: Path, now: float | None = None) -> bool:
    """Whether `path` exists and was last written less than KEPT_FOR ago."""
    try:
        written = path.stat().st_mtime
    except FileNotFoundError:
        return False
    return (time.time() if now is None else now) - written < KEPT_FOR


def buildd_tarball(
    target: Path = BUILDD_TARBALL,
    lock_file: Path = LOCK_FILE,
    pipeline_environment: Path = PIPELINE_ENVIRONMENT,
) -> Path:
    """
    `target`, made first if it is missing or too old, from the pipeline's tarball in
    `pipeline_environment` if there is a recent one (see the module's docstring).
    """
    if is_recent(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.parent.stat().st_uid == os.geteuid():
        # The worker user reads the tarball (sbuild, the unshare executor) and makes it.
        target.parent.chmod(0o755)
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_recent(target):  # made by another process while we waited
            return target
        _remove_leftovers(target)
        try:
            _make(target, pipeline_environment)
        except EnvironmentBuildError as exc:
            if not target.is_file():
                raise
            print(f"warning: using the old {target}: {exc}", file=sys.stderr)
    return target


def _remove_leftovers(target: Path) -> None:
    """Staging directories of attempts that died half-way (only the lock holder builds)."""
    for staging in target.parent.glob(f".{target.name}.*.staging"):
        shutil.rmtree(staging, ignore_errors=True)


def _make(target: Path, pipeline_environment: Path) -> None:
    staging = target.parent / f".{target.name}.{os.getpid()}.staging"
    staging.mkdir()
    try:
        made = staging / target.name
        pipeline = pipeline_environment / PIPELINE_TARBALL
        if is_recent(pipeline_environment / "data.json") and pipeline.is_file():
            recompress(pipeline, made)
        else:
            bootstrap(made)
        made.chmod(0o644)
        made.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def recompress(xz_tarball: Path, destination: Path) -> None:
    """Write `xz_tarball`'s contents to `destination` compressed with zstd."""
    with open(destination, "wb") as output:
        decompress = subprocess.Popen(
            ["xz", "--decompress", "--stdout", "--threads=0", str(xz_tarball)],
            stdout=subprocess.PIPE,
        )
        assert decompress.stdout is not None
        compress = subprocess.run(
            ["zstd", "--quiet", "--threads=0", "--stdout"],
            stdin=decompress.stdout,
            stdout=output,
            check=False,
        )
        decompress.stdout.close()
        if decompress.wait() != 0 or compress.returncode != 0:
            raise EnvironmentBuildError(
                f"cannot re-compress {xz_tarball}: xz exited with {decompress.returncode}, "
                f"zstd with {compress.returncode}"
            )


def bootstrap_command(destination: Path, mirror: str) -> list[str]:
    """The mmdebstrap command line that writes the environment to `destination`."""
    command = [
        "mmdebstrap",
        "--mode=unshare",
        f"--variant={VARIANT}",
        f"--architectures={ARCHITECTURE}",
        "--quiet",
        CODENAME,
        str(destination),
        mirror,
    ]
    if os.geteuid() == 0:
        # Root has no subordinate IDs; the worker user has (ensure_worker_user).
        command = ["runuser", "-u", WORKER_USER, "--", *command]
    return command


def bootstrap(destination: Path, mirror: str | None = None) -> None:
    """Bootstrap the environment with mmdebstrap into `destination` (compressed by its name)."""
    if shutil.which("mmdebstrap") is None:
        raise EnvironmentBuildError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    if os.geteuid() == 0:
        account = ensure_worker_user(WORKER_USER)
        os.chown(destination.parent, account.pw_uid, account.pw_gid)
        home = account.pw_dir
    else:
        home = pwd.getpwuid(os.getuid()).pw_dir
    command = bootstrap_command(destination, mirror or default_mirror())
    print(f"Making the tests' build environment: {' '.join(command)}", file=sys.stderr)
    started = time.monotonic()
    try:
        result = subprocess.run(
            command,
            cwd=destination.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BOOTSTRAP_TIMEOUT,
            check=False,
            env={**os.environ, "LC_ALL": "C.UTF-8", "HOME": home},
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentBuildError(f"mmdebstrap took more than {exc.timeout} s") from exc
    if result.returncode != 0 or not destination.is_file():
        raise EnvironmentBuildError(
            f"mmdebstrap exited with {result.returncode}:\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )
    print(
        f"Made {destination.name} in {time.monotonic() - started:.0f} s",
        file=sys.stderr,
    )
