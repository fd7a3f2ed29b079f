"""
The Debian packages of this tree, built once per source state and kept in the test cache.

`built_packages()` returns the directory holding the `.deb` files `make deb` makes from the
current tree. They are kept under `/var/cache/debusine-tests/debs/<digest>/`, where the digest
covers every file the packages are made of (debian/, deploy/, the debusine package,
pyproject.toml, the Makefile): a test run after an unrelated change reuses them, one after a
change to what they contain builds them again. One process builds, under an exclusive lock;
the others wait for it and then find the result. Older builds are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from debusine.testing.worker import TEST_CACHE

ROOT = Path(__file__).resolve().parents[2]
CACHE = TEST_CACHE / "debs"
LOCK_FILE = TEST_CACHE / ".debs.lock"
#: Binary packages of debian/control.
PACKAGES = (
    "debusine-common",
    "debusine-server",
    "debusine-worker",
    "debusine-signing",
    "debusine-client",
)
#: What the build needs (apt-get install -y, as root).
BUILD_DEPENDENCIES = ("debhelper", "python3-venv", "dpkg-dev")
BUILD_TIMEOUT = 1800

_SOURCES = ("debian", "deploy", "debusine", "pyproject.toml", "Makefile")
_SKIPPED_PARTS = {"__pycache__", "tests"}
#: Under _SOURCES but in no package: a change to them needs no new build.
_UNPACKAGED = (Path("deploy") / "ansible",)


def source_digest(root: Path = ROOT) -> str:
    """A digest of the files the packages are made of (tests and byte code left out)."""
    digest = hashlib.sha256()
    for name in _SOURCES:
        top = root / name
        paths = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in paths:
            relative = path.relative_to(root)
            if not path.is_file() or _SKIPPED_PARTS & set(relative.parts):
                continue
            if any(relative.is_relative_to(unpackaged) for unpackaged in _UNPACKAGED):
                continue
            digest.update(str(relative).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def ensure_build_dependencies() -> None:
    """Install what `make deb` needs when it is missing."""
    missing = [
        package
        for package in BUILD_DEPENDENCIES
        if subprocess.run(
            ["dpkg-query", "--show", "--showformat=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        != "install ok installed"
    ]
    if missing:
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *missing],
            check=True,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )


def built_packages(root: Path = ROOT) -> Path:
    """The directory of this tree's `.deb` files, built first if not in the cache."""
    target = CACHE / source_digest(root)
    if _complete(target):
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    for directory in (TEST_CACHE, CACHE):
        if directory.stat().st_uid == os.geteuid():
            directory.chmod(0o755)  # the unprivileged bootstrap reads the packages
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(target):  # built by another process while we waited
            return target
        ensure_build_dependencies()
        staging = CACHE / f".{target.name}.{os.getpid()}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        build = staging / "build"
        started = time.monotonic()
        print(f"Building the Debian packages into {target}", file=sys.stderr)
        result = subprocess.run(
            ["make", "--no-print-directory", "deb", f"DEB_DIR={build}"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
            env={**_without_virtualenv(os.environ), "LC_ALL": "C.UTF-8"},
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(
                f"make deb exited with {result.returncode}:\n"
                f"{(result.stdout + result.stderr)[-5000:]}"
            )
        debs = staging / "debs"
        debs.mkdir()
        for deb in build.glob("*.deb"):
            shutil.move(deb, debs / deb.name)
        shutil.rmtree(build)
        debs.chmod(0o755)
        for old in CACHE.iterdir():
            if old.is_dir() and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        debs.rename(target)
        shutil.rmtree(staging, ignore_errors=True)
        print(f"Built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return target


def _complete(directory: Path) -> bool:
    return all(any(directory.glob(f"{package}_*.deb")) for package in PACKAGES)


def _without_virtualenv(environ: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """The environment without our virtualenv: the packages are built with Debian's Python."""
    venv = environ.get("VIRTUAL_ENV")
    path = [
        entry
        for entry in environ.get("PATH", "").split(os.pathsep)
        if not (venv and entry.startswith(venv)) and ".venv" not in entry
    ]
    return {
        **{
            name: value
            for name, value in environ.items()
            if not name.startswith(("VIRTUAL_ENV", "PYTHON", "DEBUSINE_", "DJANGO"))
        },
        "PATH": os.pathsep.join(path),
    }
