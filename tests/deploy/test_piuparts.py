"""
Debian's `piuparts` passes on each of our packages.

For each binary package, piuparts (run as root, in a mount namespace of its own so that none
of its mounts can outlive it) unpacks a clean Debian 12 minbase system (the cached
`PIUPARTS_BASE` tarball of tests/deploy/roots.py), installs the package with apt from a flat
repository of the built `.deb` files (one per run, bind-mounted into its chroot) and
Debian's archive for the dependencies, then removes and purges it, and checks that the system
is as it was: maintainer scripts that fail, files left behind or modified, processes left
running.

`--warn-on-leftovers-after-purge`: the purge of `debusine-server` keeps the file store and
the secret key under `/var/lib/debusine/server` on purpose (docs/explanation/packaging.md:
data is never lost); piuparts reports them as warnings, every other check stays an error.

The packages run in parallel (`PARALLEL` at a time). Each one's log is written under the test's
temporary directory, and the failures' tails are in the assertion's message.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from debusine.tasks.mmdebstrap import default_mirror
from tests.deploy.apt_repository import make_flat_repository
from tests.deploy.packages import PACKAGES, built_packages
from tests.deploy.roots import PIUPARTS_BASE, SUITE, system_tarball

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PARALLEL = 3
PIUPARTS_TIMEOUT = 1200


@dataclass
class Outcome:
    package: str
    returncode: int
    seconds: float
    log: Path


def piuparts_command(package: str, base: Path, repository: Path, tmpdir: Path) -> list[str]:
    return [
        # Every mount piuparts makes (proc, devpts, the repository) dies with its namespace.
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--kill-child",
        "piuparts",
        f"--distribution={SUITE}",
        f"--mirror={default_mirror()}",
        f"--basetgz={base}",
        f"--tmpdir={tmpdir}",
        f"--bindmount={repository}",
        f"--extra-repo=deb [trusted=yes] file://{repository} ./",
        "--warn-on-leftovers-after-purge",
        "--apt",
        package,
    ]


def run_piuparts(package: str, base: Path, debs: Path, work: Path) -> Outcome:
    # A repository per run: piuparts fails a run when a process has a file open under its
    # chroot, and another run's apt reading the same bind-mounted files counts.
    repository = make_flat_repository(debs, work / f"{package}.repository")
    tmpdir = work / f"{package}.tmp"
    tmpdir.mkdir()
    log = work / f"{package}.log"
    started = time.monotonic()
    with log.open("w") as output:
        returncode = subprocess.run(
            piuparts_command(package, base, repository, tmpdir),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=PIUPARTS_TIMEOUT,
            check=False,
            env={
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LC_ALL": "C.UTF-8",
            },
        ).returncode
    return Outcome(package, returncode, time.monotonic() - started, log)


def test_piuparts_passes_on_each_package(tmp_path: Path) -> None:
    base = system_tarball(PIUPARTS_BASE)
    debs = built_packages()
    work = tmp_path / "piuparts"
    work.mkdir()
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        outcomes = list(
            pool.map(lambda package: run_piuparts(package, base, debs, work), PACKAGES)
        )
    failed = [outcome for outcome in outcomes if outcome.returncode != 0]
    report = "\n".join(
        f"--- {outcome.package}: piuparts exited with {outcome.returncode} "
        f"after {outcome.seconds:.0f} s; its log: {outcome.log}\n"
        f"{outcome.log.read_text(errors='replace')[-4000:]}"
        for outcome in failed
    )
    assert not failed, report
    for outcome in outcomes:
        assert "PASS: All tests." in outcome.log.read_text(), outcome.log
