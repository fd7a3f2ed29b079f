"""
Debian 12 system tarballs for the deployment tests, made once per machine and kept.

`system_tarball(spec)` returns `/var/cache/debusine-tests/<spec.name>.<spec.extension>`, made
with `mmdebstrap --mode=unshare` (as the unprivileged worker user when we are root) when it is
missing or older than `KEPT_FOR` (the archive moves on). One process makes it under an
exclusive lock, under a temporary name renamed into place once complete; the others wait for
the lock and then find it. Two are used:

- `ANSIBLE_TARGET`: what a freshly installed Debian 12 server looks like to Ansible (Python,
  python3-apt, systemd's `systemctl`, no running systemd), extracted into a throwaway directory
  for each run of the roles;
- `PIUPARTS_BASE`: piuparts' base system (minbase and eatmydata, as piuparts makes its own;
  gzip, as its `--basetgz` wants).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from debusine.tasks.mmdebstrap import default_mirror
from debusine.testing.environments import is_recent
from debusine.testing.worker import TEST_CACHE, ensure_worker_user

SUITE = "bookworm"
BOOTSTRAP_TIMEOUT = 1200


class SystemTarballError(Exception):
    """mmdebstrap failed."""


@dataclass(frozen=True)
class SystemSpec:
    """What a cached tarball holds."""

    name: str
    variant: str
    include: tuple[str, ...] = ()
    extension: str = "tar.zst"

    @property
    def path(self) -> Path:
        return TEST_CACHE / f"{self.name}.{self.extension}"


ANSIBLE_TARGET = SystemSpec(
    name=f"{SUITE}-ansible-target",
    variant="apt",
    # Ansible's modules run with the target's Python; its apt module needs python3-apt, its
    # systemd module systemctl. The rest are our packages' dependencies, so that the roles'
    # run downloads nothing but our packages' from the local repository.
    include=("python3", "python3-apt", "systemd", "adduser", "openssl", "ca-certificates"),
)
PIUPARTS_BASE = SystemSpec(
    name=f"{SUITE}-piuparts-base",
    variant="minbase",
    # What piuparts puts in the base systems it makes itself: it then runs dpkg and apt
    # without their fsync calls (minutes less on a 230 MB virtual environment).
    include=("eatmydata",),
    extension="tgz",
)


def system_tarball(spec: SystemSpec) -> Path:
    """`spec`'s tarball, made first when missing or too old (see the module docstring)."""
    target = spec.path
    if is_recent(target):
        return target
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    if TEST_CACHE.stat().st_uid == os.geteuid():
        TEST_CACHE.chmod(0o755)
    with open(TEST_CACHE / f".{spec.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_recent(target):  # made by another process while we waited
            return target
        staging = TEST_CACHE / f".{spec.name}.{os.getpid()}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            made = staging / target.name
            _bootstrap(spec, made)
            made.chmod(0o644)
            made.replace(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _bootstrap(spec: SystemSpec, destination: Path) -> None:
    command = [
        "mmdebstrap",
        "--mode=unshare",
        f"--variant={spec.variant}",
        "--quiet",
        *([f"--include={','.join(spec.include)}"] if spec.include else []),
        SUITE,
        str(destination),
        default_mirror(),
    ]
    home = str(Path.home())
    if os.geteuid() == 0:
        # Root has no subordinate IDs; the worker user has.
        account = ensure_worker_user()
        os.chown(destination.parent, account.pw_uid, account.pw_gid)
        command = ["runuser", "-u", account.pw_name, "--", *command]
        home = account.pw_dir
    print(f"Making {destination.name}: {' '.join(command)}", file=sys.stderr)
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
        raise SystemTarballError(f"mmdebstrap took more than {exc.timeout} s") from exc
    if result.returncode != 0 or not destination.is_file():
        raise SystemTarballError(
            f"mmdebstrap exited with {result.returncode}:\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )
    print(f"Made {destination.name} in {time.monotonic() - started:.0f} s", file=sys.stderr)
