"""
The real Debusine client and worker (Debian's `debusine-client` and `debusine-worker` 0.11.3),
fetched for the compatibility tests (tests/compat) and the benchmarks.

The packages come from Debian's archive with `apt-get`, but through a private sources.list,
package lists and cache, so the machine's apt configuration and installed packages are left
alone. apt simulates installing `debusine-client` against the machine's dpkg status: what it
would install is exactly the dependency closure the machine lacks. Those packages, plus
`debusine-worker` (a launcher script over the same `python3-debusine` library), are
downloaded and unpacked with `dpkg-deb -x` into a directory keyed by the version; both
programs then run under Debian's own Python (`/usr/bin/python3`) with that directory's
dist-packages first on `PYTHONPATH`. Reruns reuse the directory and need no network.

The cache lives in `.data/reference-client/` of the checkout (or in
`$DEBUSINE_REFERENCE_CLIENT_CACHE`); delete the version's directory to fetch again, for instance
after the machine's Python packages changed. Parallel test workers share it: a file lock lets
one of them fetch.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLIENT_PACKAGE = "debusine-client"
WORKER_PACKAGE = "debusine-worker"
LIBRARY_PACKAGE = "python3-debusine"
CLIENT_VERSION = "0.11.3~bpo12+1"
ARCHIVE_URL = "http://deb.debian.org/debian"
# The backport lives in bookworm-backports; its dependencies come from bookworm itself.
SUITES = ("bookworm-backports", "bookworm")
ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SYSTEM_PYTHON = Path("/usr/bin/python3")
CACHE_ENVIRONMENT_VARIABLE = "DEBUSINE_REFERENCE_CLIENT_CACHE"
ARCHIVE_ENVIRONMENT_VARIABLE = "DEBUSINE_REFERENCE_CLIENT_ARCHIVE"
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".data" / "reference-client"
COMPLETE_MARKER = "packages.txt"
# Unpacked at the pinned version whatever the machine has; a cache lacking one is fetched again.
PINNED_PACKAGES = (CLIENT_PACKAGE, WORKER_PACKAGE, LIBRARY_PACKAGE)
# `Inst NAME [OLD-VERSION] (NEW-VERSION SUITES [ARCH])` lines of `apt-get -s install`.
SIMULATED_INSTALL = re.compile(r"^Inst (?P<name>\S+) (?:\[[^\]]*\] )?\((?P<version>\S+) ", re.M)


class ReferenceClientError(Exception):
    """The reference client could not be fetched; the message says which step failed and why."""


@dataclass(frozen=True)
class UnpackedDebusine:
    """The unpacked Debian packages, whose programs run under the system Python."""

    root: Path  # the unpacked packages: root/usr/bin/debusine, root/usr/lib/python3/...
    version: str

    @property
    def python_path(self) -> Path:
        return self.root / "usr" / "lib" / "python3" / "dist-packages"

    def environment(self, home: Path) -> dict[str, str]:
        """Environment of a run: a private HOME, the unpacked packages first."""
        inherited = {
            name: value
            for name, value in os.environ.items()
            # Our virtualenv and Python settings must not leak into Debian's Python.
            if not name.startswith(("PYTHON", "VIRTUAL_ENV", "DJANGO", "DEBUSINE_"))
        }
        return {
            **inherited,
            "HOME": str(home),
            "PYTHONPATH": str(self.python_path),
            "PYTHONDONTWRITEBYTECODE": "1",
            # The client prints YAML and rich tables: keep them plain and wide.
            "COLUMNS": "200",
            "TERM": "dumb",
        }


@dataclass(frozen=True)
class ReferenceWorker(UnpackedDebusine):
    """An unpacked `debusine-worker` daemon."""

    @property
    def script(self) -> Path:
        return self.root / "usr" / "bin" / "debusine-worker"

    def command(self, *args: str) -> list[str]:
        """The command line of `debusine-worker ARGS`, as the Debian package starts it."""
        return [str(SYSTEM_PYTHON), str(self.script), *args]


@dataclass(frozen=True)
class ReferenceClient(UnpackedDebusine):
    """An unpacked `debusine` client."""

    @property
    def script(self) -> Path:
        return self.root / "usr" / "bin" / "debusine"

    def command(self, *args: str) -> list[str]:
        """The command line of `debusine ARGS`, for a client that runs in the background."""
        return [str(SYSTEM_PYTHON), str(self.script), *args]

    def run(
        self,
        *args: str,
        home: Path,
        stdin: str | None = None,
        cwd: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `debusine ARGS` (never raises on a non-zero exit: tests check the status)."""
        return subprocess.run(
            self.command(*args),
            input=stdin if stdin is not None else "",
            env=self.environment(home),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


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


class _PrivateApt:
    """apt-get with its own sources.list, lists and cache under `work_dir`."""

    def __init__(self, work_dir: Path, archive_url: str) -> None:
        self.archive_url = archive_url
        sources = work_dir / "sources.list"
        sources.write_text(
            "".join(
                f"deb [signed-by={ARCHIVE_KEYRING}] {archive_url} {suite} main\n"
                for suite in SUITES
            )
        )
        lists = work_dir / "lists"
        cache = work_dir / "cache"
        (lists / "partial").mkdir(parents=True)
        (cache / "archives" / "partial").mkdir(parents=True)
        self.options = [
            "-o",
            f"Dir::Etc::sourcelist={sources}",
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            f"Dir::State::Lists={lists}",
            "-o",
            f"Dir::Cache={cache}",
        ]
        if os.geteuid() == 0:
            # apt's `_apt` sandbox user cannot write to our private directories.
            self.options += ["-o", "APT::Sandbox::User=root"]

    def run(self, step: str, *args: str, cwd: Path | None = None) -> str:
        command = ["apt-get", "-q", *self.options, *args]
        try:
            result = subprocess.run(
                command, cwd=cwd, capture_output=True, text=True, check=False, timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReferenceClientError(f"{step}: {exc}") from exc
        # `apt-get update` may exit 0 although an index could not be fetched.
        failed_fetch = step == "update" and re.search(
            r"^(E: |W: Failed to fetch)", result.stderr, re.M
        )
        if result.returncode != 0 or failed_fetch:
            raise ReferenceClientError(
                f"{step} failed (apt-get exited with {result.returncode}). "
                f"Is {self.archive_url} reachable from this machine?\n"
                f"$ {' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return result.stdout


def _packages_to_unpack(apt: _PrivateApt) -> list[tuple[str, str]]:
    """(name, version) of the client and of every dependency the machine lacks."""
    simulation = apt.run(
        "dependency resolution",
        "--simulate",
        "--no-install-recommends",
        "install",
        f"{CLIENT_PACKAGE}={CLIENT_VERSION}",
    )
    packages = {
        match["name"]: match["version"] for match in SIMULATED_INSTALL.finditer(simulation)
    }
    # Installed copies of the client itself are ignored: we always run the pinned version.
    # The worker package adds only its launcher to python3-debusine; its own dependencies are
    # machine-level (udev, which would drag in a systemd upgrade, adduser and arch-test, which
    # the test wrapper installs), so it joins the closure without being resolved itself.
    for name in PINNED_PACKAGES:
        packages[name] = CLIENT_VERSION
    return sorted(packages.items())


def _fetch_into(target: Path, work_dir: Path, archive_url: str) -> None:
    apt = _PrivateApt(work_dir, archive_url)
    apt.run("update", "update")
    packages = _packages_to_unpack(apt)
    downloads = work_dir / "debs"
    downloads.mkdir()
    apt.run(
        "download",
        "download",
        *(f"{name}={version}" for name, version in packages),
        cwd=downloads,
    )
    root = target / "root"
    for deb in sorted(downloads.glob("*.deb")):
        result = subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ReferenceClientError(f"dpkg-deb -x {deb.name} failed:\n{result.stderr}")
    # Compile once here: client runs then never write bytecode, so parallel runs cannot race.
    subprocess.run(
        [str(SYSTEM_PYTHON), "-m", "compileall", "-q", str(root / "usr" / "lib" / "python3")],
        capture_output=True,
        check=False,  # a module that does not compile for 3.11 is never imported by the client
    )
    (target / COMPLETE_MARKER).write_text(
        "".join(f"{name} {version}\n" for name, version in packages)
    )


def _check_prerequisites() -> None:
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing or not SYSTEM_PYTHON.exists() or not ARCHIVE_KEYRING.exists():
        raise ReferenceClientError(
            "the reference client needs a Debian 12 machine with apt-get, dpkg-deb, "
            f"{SYSTEM_PYTHON} and {ARCHIVE_KEYRING}; missing: "
            + ", ".join(
                missing
                + [str(path) for path in (SYSTEM_PYTHON, ARCHIVE_KEYRING) if not path.exists()]
            )
        )


def _is_complete(target: Path) -> bool:
    """Whether `target` holds a finished fetch with every pinned package at the pinned version."""
    try:
        listed = (target / COMPLETE_MARKER).read_text().splitlines()
    except FileNotFoundError:
        return False
    return all(f"{name} {CLIENT_VERSION}" in listed for name in PINNED_PACKAGES)


def _unpacked_root(cache: Path | None, archive_url: str | None) -> Path:
    """The unpacked packages' root: from the cache, else fetched from Debian's archive now."""
    cache = cache if cache is not None else _cache_directory()
    archive_url = archive_url or os.environ.get(ARCHIVE_ENVIRONMENT_VARIABLE) or ARCHIVE_URL
    target = cache / CLIENT_VERSION
    if _is_complete(target):
        return target / "root"
    _check_prerequisites()
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache / f"{CLIENT_VERSION}.lock"):
        if _is_complete(target):  # another test worker fetched it meanwhile
            return target / "root"
        with tempfile.TemporaryDirectory(prefix="fetch-", dir=cache) as scratch:
            staging = Path(scratch) / "result"
            staging.mkdir()
            _fetch_into(staging, Path(scratch), archive_url)
            # An older fetch (one lacking the worker, say) is replaced as a whole.
            shutil.rmtree(target, ignore_errors=True)
            # Rename: a half-fetched tree is never seen under the version's name.
            staging.rename(target)
    return target / "root"


def reference_client(cache: Path | None = None, archive_url: str | None = None) -> ReferenceClient:
    """
    The unpacked reference client: from the cache, else fetched from Debian's archive now.

    `archive_url` (default `$DEBUSINE_REFERENCE_CLIENT_ARCHIVE`, else deb.debian.org) may name
    a mirror. Raises ReferenceClientError when the client cannot be fetched.
    """
    return ReferenceClient(root=_unpacked_root(cache, archive_url), version=CLIENT_VERSION)


def reference_worker(cache: Path | None = None, archive_url: str | None = None) -> ReferenceWorker:
    """The unpacked reference worker, fetched like (and together with) the reference client."""
    return ReferenceWorker(root=_unpacked_root(cache, archive_url), version=CLIENT_VERSION)
