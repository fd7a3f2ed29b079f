"""
Tiny Debian packages for `debusine import-debian-artifact`: a .deb, a source package and an upload.

The .deb is built with `dpkg-deb` (always present on Debian); the native source package and the
`.changes` are written directly, with the checksums the client verifies, so the tests need no
`dpkg-dev` and no build.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "hello-compat"
VERSION = "1.0"
ARCHITECTURE = "all"
MAINTAINER = "Compat Tests <compat@example.org>"
DATE = "Mon, 01 Jan 2024 00:00:00 +0000"


@dataclass(frozen=True)
class DebianUpload:
    """Paths of a source + binary upload of `hello-compat` 1.0 in one directory."""

    changes: Path
    dsc: Path
    tarball: Path
    deb: Path


def _checksum_lines(paths: list[Path], algorithm: str, *, with_section: bool = False) -> str:
    lines = []
    for path in paths:
        digest = hashlib.new(algorithm, path.read_bytes()).hexdigest()
        section = " misc optional" if with_section else ""
        lines.append(f" {digest} {path.stat().st_size}{section} {path.name}")
    return "\n".join(lines)


def build_deb(directory: Path) -> Path:
    """Build `hello-compat_1.0_all.deb` (one documentation file) in `directory`."""
    tree = directory / "deb-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {PACKAGE}\nVersion: {VERSION}\nArchitecture: {ARCHITECTURE}\n"
        f"Maintainer: {MAINTAINER}\nSection: misc\nPriority: optional\n"
        "Description: package for client compatibility tests\n"
    )
    doc = tree / "usr" / "share" / "doc" / PACKAGE
    doc.mkdir(parents=True)
    (doc / "README").write_text("Built by the compatibility tests.\n")
    deb = directory / f"{PACKAGE}_{VERSION}_{ARCHITECTURE}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def _build_source_tarball(directory: Path) -> Path:
    tarball = directory / f"{PACKAGE}_{VERSION}.tar.xz"
    files = {
        "debian/changelog": (
            f"{PACKAGE} ({VERSION}) unstable; urgency=medium\n\n  * Test package.\n\n"
            f" -- {MAINTAINER}  {DATE}\n"
        ),
        "debian/source/format": "3.0 (native)\n",
    }
    with tarfile.open(tarball, "w:xz") as archive:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(f"{PACKAGE}-{VERSION}/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return tarball


def build_dsc(directory: Path) -> tuple[Path, Path]:
    """Write a native source package (`.dsc` + `.tar.xz`); return both paths."""
    tarball = _build_source_tarball(directory)
    dsc = directory / f"{PACKAGE}_{VERSION}.dsc"
    dsc.write_text(
        "Format: 3.0 (native)\n"
        f"Source: {PACKAGE}\nBinary: {PACKAGE}\nArchitecture: {ARCHITECTURE}\n"
        f"Version: {VERSION}\nMaintainer: {MAINTAINER}\n"
        "Standards-Version: 4.6.2\n"
        f"Package-List:\n {PACKAGE} deb misc optional arch={ARCHITECTURE}\n"
        f"Checksums-Sha1:\n{_checksum_lines([tarball], 'sha1')}\n"
        f"Checksums-Sha256:\n{_checksum_lines([tarball], 'sha256')}\n"
        f"Files:\n{_checksum_lines([tarball], 'md5')}\n"
    )
    return dsc, tarball


def build_upload(directory: Path) -> DebianUpload:
    """Write a source + binary upload (`.changes`, `.dsc`, `.tar.xz`, `.deb`) in `directory`."""
    deb = build_deb(directory)
    dsc, tarball = build_dsc(directory)
    files = [dsc, tarball, deb]
    changes = directory / f"{PACKAGE}_{VERSION}_source+{ARCHITECTURE}.changes"
    changes.write_text(
        f"Format: 1.8\nDate: {DATE}\nSource: {PACKAGE}\nBinary: {PACKAGE}\n"
        f"Architecture: source {ARCHITECTURE}\nVersion: {VERSION}\nDistribution: unstable\n"
        f"Urgency: medium\nMaintainer: {MAINTAINER}\nChanged-By: {MAINTAINER}\n"
        f"Description:\n {PACKAGE} - package for client compatibility tests\n"
        f"Changes:\n {PACKAGE} ({VERSION}) unstable; urgency=medium\n .\n   * Test package.\n"
        f"Checksums-Sha1:\n{_checksum_lines(files, 'sha1')}\n"
        f"Checksums-Sha256:\n{_checksum_lines(files, 'sha256')}\n"
        f"Files:\n{_checksum_lines(files, 'md5', with_section=True)}\n"
    )
    return DebianUpload(changes=changes, dsc=dsc, tarball=tarball, deb=deb)
