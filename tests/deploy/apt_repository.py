"""
A flat APT repository of the built packages, as an administrator would publish them.

`make_flat_repository(debs, directory)` copies the `.deb` files into `directory` and indexes
them with `apt-ftparchive` (`Packages`, then a `Release` listing its checksums): APT reads it
with `deb [trusted=yes] file:<directory> ./` (or, in deb822, `Suites: ./` and `Trusted: yes`),
unsigned as a repository on the machine itself may be.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def make_flat_repository(debs: Path, directory: Path) -> Path:
    """`directory`, holding the `.deb` files of `debs` and their index."""
    directory.mkdir(parents=True, exist_ok=True)
    for deb in sorted(debs.glob("*.deb")):
        shutil.copy2(deb, directory / deb.name)
    packages = subprocess.run(
        ["apt-ftparchive", "packages", "."],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (directory / "Packages").write_text(packages)
    release = subprocess.run(
        ["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=Debusine tests",
         "release", "."],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip
    (directory / "Release").write_text(release)
    directory.chmod(0o755)
    return directory
