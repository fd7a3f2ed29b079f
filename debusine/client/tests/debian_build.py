"""
Build a real, tiny Debian upload with `dpkg-buildpackage`, for `import-debian-artifact` tests.

The source package `hello-client` (native, `Architecture: all`) has two binary packages and a
`debian/rules` written by hand, so only dpkg-dev is needed (no debhelper, no compiler).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "hello-client"
VERSION = "1.0"
BINARIES = ("hello-client", "hello-client-data")

_CONTROL = f"""\
Source: {PACKAGE}
Section: misc
Priority: optional
Maintainer: Client Tests <client-tests@example.org>
Standards-Version: 4.6.2
Rules-Requires-Root: no

Package: hello-client
Architecture: all
Depends: hello-client-data
Description: greeting for the client tests
 Built by the debusine client tests with dpkg-buildpackage.

Package: hello-client-data
Architecture: all
Description: data of the greeting for the client tests
 Built by the debusine client tests with dpkg-buildpackage.
"""

_CHANGELOG = f"""\
{PACKAGE} ({VERSION}) unstable; urgency=medium

  * Test upload.

 -- Client Tests <client-tests@example.org>  Mon, 01 Jan 2024 00:00:00 +0000
"""

# Each binary package gets one file; dpkg-gencontrol records it in debian/files.
_RULES = """\
#!/usr/bin/make -f
PACKAGES = hello-client hello-client-data

build build-arch build-indep:

binary-arch:

binary-indep:
\tfor package in $(PACKAGES); do \\
\t  rm -rf debian/$$package && \\
\t  mkdir -p debian/$$package/DEBIAN debian/$$package/usr/share/$$package && \\
\t  cp greeting.txt debian/$$package/usr/share/$$package/ && \\
\t  dpkg-gencontrol -p$$package -Pdebian/$$package && \\
\t  dpkg-deb --root-owner-group --build debian/$$package .. || exit 1; \\
\tdone

binary: binary-indep

clean:
\trm -rf debian/files $(addprefix debian/,$(PACKAGES))
"""


@dataclass(frozen=True)
class BuiltUpload:
    """The files `dpkg-buildpackage` left next to the source tree."""

    directory: Path
    changes: Path
    dsc: Path
    debs: tuple[Path, ...]

    def files(self) -> list[Path]:
        return sorted(path for path in self.directory.iterdir() if path.is_file())


def dpkg_buildpackage_available() -> bool:
    return shutil.which("dpkg-buildpackage") is not None


def build_upload(directory: Path) -> BuiltUpload:
    """Write the source tree under `directory` and build it; return what was built."""
    source = directory / f"{PACKAGE}-{VERSION}"
    (source / "debian" / "source").mkdir(parents=True)
    (source / "greeting.txt").write_text("Hello from the client tests\n")
    (source / "debian" / "control").write_text(_CONTROL)
    (source / "debian" / "changelog").write_text(_CHANGELOG)
    (source / "debian" / "source" / "format").write_text("3.0 (native)\n")
    rules = source / "debian" / "rules"
    rules.write_text(_RULES)
    rules.chmod(0o755)
    environment = {**os.environ, "SOURCE_DATE_EPOCH": "1704067200", "DEB_BUILD_OPTIONS": ""}
    result = subprocess.run(
        ["dpkg-buildpackage", "-us", "-uc", "-d", "--build=source,all"],
        cwd=source,
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dpkg-buildpackage failed:\n{result.stdout}\n{result.stderr}")
    changes = sorted(directory.glob(f"{PACKAGE}_{VERSION}_*.changes"))
    if len(changes) != 1:
        raise RuntimeError(f"expected one .changes in {directory}, found {changes}")
    return BuiltUpload(
        directory=directory,
        changes=changes[0],
        dsc=directory / f"{PACKAGE}_{VERSION}.dsc",
        debs=tuple(directory / f"{binary}_{VERSION}_all.deb" for binary in BINARIES),
    )
