"""
Tiny Debian source packages for tests of the Debian tasks (sbuild, lintian, autopkgtest, ...).

`make_source_package()` writes a source tree by hand (no dh_make) and builds it with
`dpkg-source -b`, so a test gets a real `.dsc` in well under a second. The package builds two
binary packages: `<name>` (Architecture: any, a shell script in /usr/bin) and `<name>-data`
(Architecture: all), so tests can tell the arch-any and arch-all parts of a build apart.
"""

from __future__ import annotations

import gzip
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
import textwrap
from pathlib import Path

#: Maintainer of the generated packages (an address that cannot receive mail).
MAINTAINER = "Debusine Tests <debusine-tests@example.org>"

#: Changelog date: fixed, so two runs make identical sources.
CHANGELOG_DATE = "Mon, 01 Jan 2024 12:00:00 +0000"


def _write(path: Path, text: str, *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _upstream_version(version: str) -> str:
    """The upstream part of a Debian version: without epoch and Debian revision."""
    without_epoch = version.split(":", 1)[-1]
    return without_epoch.rsplit("-", 1)[0] if "-" in without_epoch else without_epoch


def _normalise(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.mtime = 0
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def _write_orig_tarball(path: Path, tree: Path) -> None:
    """Write `tree` as an upstream tarball whose bytes depend only on the files' contents."""
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as orig,
    ):
        orig.add(tree, arcname=tree.name, filter=_normalise)


def _debhelper_rules(name: str, fail_build: bool) -> str:
    build_override = (
        'override_dh_auto_build:\n\techo "this build fails on purpose" >&2\n\texit 1\n'
        if fail_build
        else "override_dh_auto_build:\n\tsh -n $(NAME)\n"
    )
    return (
        "#!/usr/bin/make -f\n"
        f"NAME = {name}\n"
        "%:\n"
        "\tdh $@\n"
        "\n"
        f"{build_override}"
        "\n"
        "override_dh_auto_install:\n"
        "\tinstall -D -m 0755 $(NAME) debian/$(NAME)/usr/bin/$(NAME)\n"
        "\tinstall -D -m 0644 greeting.txt debian/$(NAME)-data/usr/share/$(NAME)/greeting.txt\n"
    )


def _plain_rules(name: str, fail_build: bool) -> str:
    """A debian/rules that needs nothing but dpkg-dev (no debhelper: faster to build)."""
    build = (
        '\techo "this build fails on purpose" >&2\n\texit 1\n'
        if fail_build
        else "\tsh -n $(NAME)\n"
    )
    return (
        "#!/usr/bin/make -f\n"
        f"NAME = {name}\n"
        "ARCH_DIR = debian/tmp-arch\n"
        "INDEP_DIR = debian/tmp-indep\n"
        "\n"
        "build: build-arch build-indep\n"
        "build-arch build-indep:\n"
        f"{build}"
        "\n"
        "clean:\n"
        "\trm -rf $(ARCH_DIR) $(INDEP_DIR) debian/files debian/substvars\n"
        "\n"
        "binary: binary-arch binary-indep\n"
        "\n"
        "binary-arch: build-arch\n"
        "\trm -rf $(ARCH_DIR)\n"
        "\tinstall -D -m 0755 $(NAME) $(ARCH_DIR)/usr/bin/$(NAME)\n"
        "\tinstall -D -m 0644 debian/copyright $(ARCH_DIR)/usr/share/doc/$(NAME)/copyright\n"
        "\tmkdir -p $(ARCH_DIR)/DEBIAN\n"
        "\tdpkg-gencontrol -p$(NAME) -P$(ARCH_DIR)\n"
        "\tdpkg-deb --root-owner-group --build $(ARCH_DIR) ..\n"
        "\n"
        "binary-indep: build-indep\n"
        "\trm -rf $(INDEP_DIR)\n"
        "\tinstall -D -m 0644 greeting.txt $(INDEP_DIR)/usr/share/$(NAME)/greeting.txt\n"
        "\tinstall -D -m 0644 debian/copyright"
        " $(INDEP_DIR)/usr/share/doc/$(NAME)-data/copyright\n"
        "\tmkdir -p $(INDEP_DIR)/DEBIAN\n"
        "\tdpkg-gencontrol -p$(NAME)-data -P$(INDEP_DIR)\n"
        "\tdpkg-deb --root-owner-group --build $(INDEP_DIR) ..\n"
        "\n"
        ".PHONY: build build-arch build-indep clean binary binary-arch binary-indep\n"
    )


def make_source_package(
    directory: Path,
    name: str = "hello-debusine",
    version: str = "1.0-1",
    fail_build: bool = False,
    with_autopkgtest: bool = True,
    *,
    fail_autopkgtest: bool = False,
    debhelper: bool = True,
    distribution: str = "unstable",
) -> Path:
    """
    Write and build a source package `name` `version` in `directory`; return its `.dsc`.

    A version with a Debian revision ("1.0-1") gives a "3.0 (quilt)" package with an
    `.orig.tar.gz`; one without ("1.0") a "3.0 (native)" package.

    - `fail_build`: debian/rules fails (exit status 1) while building.
    - `with_autopkgtest`: add debian/tests/control with one test running the program
      (`fail_autopkgtest`: that test fails).
    - `debhelper`: build with `dh` (Build-Depends: debhelper-compat (= 13)); False: a
      hand-written debian/rules needing only dpkg-dev, which builds faster in a bare chroot.
    """
    directory.mkdir(parents=True, exist_ok=True)
    upstream = _upstream_version(version)
    native = upstream == version.split(":", 1)[-1]
    tree = directory / f"{name}-{upstream}"
    if tree.exists():
        raise FileExistsError(f"{tree} already exists")

    # Upstream part.
    _write(
        tree / name,
        f"#!/bin/sh\n# {name}: says hello, for Debusine's tests.\necho 'Hello from {name}!'\n",
        mode=0o755,
    )
    _write(tree / "greeting.txt", f"Hello from {name}!\n")
    if not native:
        _write_orig_tarball(directory / f"{name}_{upstream}.orig.tar.gz", tree)

    # Debian part.
    debian = tree / "debian"
    build_depends = "debhelper-compat (= 13)" if debhelper else ""
    build_depends_line = f"Build-Depends: {build_depends}\n" if build_depends else ""
    _write(
        debian / "control",
        f"Source: {name}\n"
        "Section: misc\n"
        "Priority: optional\n"
        f"Maintainer: {MAINTAINER}\n"
        f"{build_depends_line}"
        "Standards-Version: 4.6.2\n"
        "Rules-Requires-Root: no\n"
        "\n"
        f"Package: {name}\n"
        "Architecture: any\n"
        "Depends: ${misc:Depends}\n"
        f"Recommends: {name}-data\n"
        f"Description: greeting program for Debusine's tests\n"
        " A shell script printing a greeting, packaged to test Debusine's tasks.\n"
        "\n"
        f"Package: {name}-data\n"
        "Architecture: all\n"
        "Depends: ${misc:Depends}\n"
        f"Description: greeting data for Debusine's tests\n"
        " A text file with a greeting, packaged to test Debusine's tasks.\n",
    )
    _write(
        debian / "changelog",
        f"{name} ({version}) {distribution}; urgency=medium\n"
        "\n"
        "  * Test package generated by Debusine's test suite.\n"
        "\n"
        f" -- {MAINTAINER}  {CHANGELOG_DATE}\n",
    )
    _write(
        debian / "copyright",
        textwrap.dedent(
            f"""\
            Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
            Upstream-Name: {name}

            Files: *
            Copyright: 2024 Debusine Tests
            License: CC0-1.0
             On Debian systems, the full text of the CC0 1.0 Universal license can be
             found in /usr/share/common-licenses/CC0-1.0.
            """
        ),
    )
    _write(debian / "source" / "format", "3.0 (native)\n" if native else "3.0 (quilt)\n")
    rules = _debhelper_rules(name, fail_build) if debhelper else _plain_rules(name, fail_build)
    _write(debian / "rules", rules, mode=0o755)
    if with_autopkgtest:
        check = "exit 1" if fail_autopkgtest else f'{name} | grep -q "Hello from {name}"'
        _write(
            debian / "tests" / "control",
            "Tests: smoke\nDepends: @\nRestrictions: superficial\n",
        )
        _write(
            debian / "tests" / "smoke",
            f"#!/bin/sh\nset -e\necho 'running the smoke test of {name}'\n{check}\n",
            mode=0o755,
        )

    subprocess.run(
        ["dpkg-source", "-b", tree.name],
        cwd=directory,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    dsc_version = version.split(":", 1)[-1]
    dsc = directory / f"{name}_{dsc_version}.dsc"
    if not dsc.is_file():
        raise FileNotFoundError(f"dpkg-source did not write {dsc}")
    return dsc


#: The unprivileged user the tools run as in tests (sbuild refuses to run as root in unshare
#: mode); it has subordinate ID ranges in /etc/subuid and /etc/subgid.
WORKER_USER = "debusine-worker"


def as_worker_user(command: list[str]) -> list[str]:
    """`command` run as WORKER_USER when the tests run as root (else as is)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", WORKER_USER, "--", *command]


def worker_user_available() -> bool:
    """Whether tools can run as an unprivileged user with subordinate IDs."""
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam(WORKER_USER)
    except KeyError:
        return False
    return shutil.which("runuser") is not None


def make_worker_directory(prefix: str = "debusine-test-") -> Path:
    """
    A new directory under /tmp that WORKER_USER owns (pytest's tmp_path is private to root).
    The caller removes it (`shutil.rmtree`).
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(WORKER_USER)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    return directory


def give_to_worker_user(path: Path) -> None:
    """Make WORKER_USER own `path` and everything under it (when the tests run as root)."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(WORKER_USER)
    for root, directories, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in directories + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
