"""
The `mmdebstrap` task: bootstrap a Debian system into a tarball (a `debian:system-tarball`).

It runs `mmdebstrap --mode=unshare` on the worker itself (no environment: this task makes
them), as the worker's unprivileged user, which needs subordinate IDs in /etc/subuid and
/etc/subgid. Customize hooks save what the artifact's data needs (os-release, the dpkg
database, whether /sbin/init exists) next to the tarball, so nothing has to be read back
from the tarball afterwards.

The tarball is compressed with xz (`system.tar.xz`), as Debusine's does: Debusine 0.11.3
workers unpack environments with `tar --xz` (their lintian and piuparts fail on anything
else), and either worker must be able to use what this task makes. xz runs on every core at
preset 3 (`XZ_OPTIONS`): on a buildd chroot (445 MB of tar) that takes 28 s on 2 cores for
117 MB, where xz's default preset 6 takes 66 s for 105 MB. Our own workers do not pay for
xz's slow decompression on every run: their environment cache keeps a zstd copy (see
`debusine.tasks.executors.cache`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import requests
from annotated_types import MaxLen
from debian.deb822 import Release
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from debusine.artifacts import DebianSystemTarball, LocalArtifact, system_tarball
from debusine.client.client import LocalFile
from debusine.tasks.base import BaseTask, LookupResolver
from debusine.tasks.models import (
    MAX_ITEMS,
    BaseDynamicTaskData,
    BaseTaskData,
    Document,
    LookupSingle,
    Name,
    Names,
    TaskType,
    Text,
)

#: Name of the tarball in the execute directory and in the artifact.
OUTPUT_FILENAME = "system.tar.xz"

#: How mmdebstrap's xz compresses (XZ_DEFAULTS): every core, preset 3 (see above).
XZ_OPTIONS = "-T0 -3"

#: Largest external keyring the task downloads.
MAX_KEYRING_SIZE = 10 * 1024 * 1024

#: Where keyrings installed in the system (`keyring.install`) go.
CHROOT_KEYRINGS_DIRECTORY = "/etc/apt/keyrings-debusine"

#: The system's APT sources file (the only one).
CHROOT_SOURCES = "/etc/apt/sources.list.d/debian.sources"

#: Directories a `file://` keyring URL may point into.
LOCAL_KEYRING_DIRECTORIES = (Path("/usr/share/keyrings"), Path("/usr/local/share/keyrings"))

_COMPONENT_RE = re.compile(r"[A-Za-z][-/A-Za-z]*")


#: The mirror used when this machine's APT configuration names none.
FALLBACK_MIRROR = "http://deb.debian.org/debian"

APT_DIRECTORY = Path("/etc/apt")


def default_mirror(apt_directory: Path = APT_DIRECTORY) -> str:
    """
    The mirror this machine's APT uses: the first `URIs:` of `sources.list.d/*.sources`, else
    the first `deb` line of `sources.list`, else FALLBACK_MIRROR.
    """
    for sources in sorted((apt_directory / "sources.list.d").glob("*.sources")):
        try:
            text = sources.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, colon, value = line.partition(":")
            if colon and key.strip().lower() == "uris" and value.split():
                return value.split()[0]
    try:
        lines = (apt_directory / "sources.list").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        # `deb [options] URI suite components...`
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 2 and words[0] == "deb":
            return words[1]
    return FALLBACK_MIRROR


class MmDebstrapVariant(StrEnum):
    """The `--variant` values mmdebstrap accepts."""

    BUILDD = "buildd"
    MINBASE = "minbase"
    DASH = "-"
    APT = "apt"
    CUSTOM = "custom"
    DEBOOTSTRAP = "debootstrap"
    ESSENTIAL = "essential"
    EXTRACT = "extract"
    IMPORTANT = "important"
    REQUIRED = "required"
    STANDARD = "standard"


class RepositoryType(StrEnum):
    """Types of an APT source."""

    DEB = "deb"
    DEB_SRC = "deb-src"


class CheckSignatureWith(StrEnum):
    """How the signature of a bootstrap repository is checked."""

    #: With the keyrings installed on the worker.
    SYSTEM = "system"
    #: With the keyring given in `keyring`.
    EXTERNAL = "external"
    #: Not at all (`Trusted: yes`).
    NO_CHECK = "no-check"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_unique(values: list[Any] | None, what: str) -> None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{what} must not repeat an item")


class RepositoryKeyring(_Strict):
    """An external keyring to check a bootstrap repository with."""

    #: http(s):// URL, or file:// URL under /usr/share/keyrings or /usr/local/share/keyrings.
    url: Text
    #: Expected SHA-256 of the keyring (empty: not checked).
    sha256sum: Annotated[str, MaxLen(64)] = ""
    #: Also install the keyring in the system and refer to it in its APT sources.
    install: bool = False

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            if not parts.netloc:
                raise ValueError(f"keyring URL {url!r} has no host")
            return url
        if parts.scheme == "file":
            path = Path(parts.path).resolve()
            if not any(path.is_relative_to(allowed) for allowed in LOCAL_KEYRING_DIRECTORIES):
                raise ValueError(
                    "file:// URLs for keyrings must be under /usr/share/keyrings/ "
                    "or /usr/local/share/keyrings/"
                )
            return url
        raise ValueError(f"keyring URL {url!r} must be http://, https:// or file://")


class BootstrapRepository(_Strict):
    """One APT repository the system is bootstrapped from (and keeps in its sources)."""

    mirror: Text
    suite: Name
    types: list[RepositoryType] = Field(
        default_factory=lambda: [RepositoryType.DEB], min_length=1, max_length=len(RepositoryType)
    )
    #: None: every component the suite's Release file lists.
    components: Names | None = None
    check_signature_with: CheckSignatureWith = CheckSignatureWith.SYSTEM
    #: A keyring package to install in the system.
    keyring_package: Name | None = None
    keyring: RepositoryKeyring | None = None

    @field_validator("types")
    @classmethod
    def _unique_types(cls, types: list[RepositoryType]) -> list[RepositoryType]:
        _check_unique(types, "types")
        return types

    @field_validator("components")
    @classmethod
    def _unique_components(cls, components: list[str] | None) -> list[str] | None:
        _check_unique(components, "components")
        return components

    @model_validator(mode="after")
    def _external_needs_keyring(self) -> BootstrapRepository:
        if self.check_signature_with == CheckSignatureWith.EXTERNAL and self.keyring is None:
            raise ValueError(
                "repository requires 'keyring': 'check_signature_with' is set to 'external'"
            )
        return self


class BootstrapOptions(_Strict):
    """Options of the bootstrap as a whole."""

    #: Architecture of the system (the task runs on a worker able to run it).
    architecture: Name
    variant: MmDebstrapVariant | None = None
    #: Packages to install besides the variant's.
    extra_packages: Names = Field(default_factory=list)
    #: Refer to external keyrings with Signed-By in the bootstrap's APT sources.
    use_signed_by: bool = True


class MmDebstrapData(BaseTaskData):
    """Data of the `mmdebstrap` task."""

    task_configuration: LookupSingle | None = "default@debusine:task-configuration"
    bootstrap_options: BootstrapOptions
    bootstrap_repositories: list[BootstrapRepository] = Field(min_length=1, max_length=MAX_ITEMS)
    #: A script copied into the system, run there (chrooted) at the end, then removed.
    customization_script: Document | None = None


def read_os_release(path: Path) -> dict[str, str]:
    """The variables of an os-release file (shell-quoted values unquoted)."""
    values: dict[str, str] = {}
    for word in shlex.split(path.read_text(encoding="utf-8"), comments=True):
        key, separator, value = word.partition("=")
        if separator:
            values[key] = value
    return values


def read_pkglist(status: Path) -> dict[str, str]:
    """
    Installed package -> version, from a copy of a system's /var/lib/dpkg/status (names as
    `dpkg-query --show` prints them: `name:arch` for Multi-Arch: same packages).
    """
    with tempfile.TemporaryDirectory(prefix="debusine-dpkg-") as admindir:
        shutil.copyfile(status, Path(admindir) / "status")
        output = subprocess.run(
            [
                "dpkg-query",
                f"--admindir={admindir}",
                "--show",
                "--showformat=${binary:Package}\t${Version}\t${db:Status-Abbrev}\n",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    packages: dict[str, str] = {}
    for line in output.splitlines():
        name, version, status_abbreviation = line.split("\t")
        if status_abbreviation.startswith("ii"):
            packages[name] = version
    return packages


def suite_components(mirror: str, suite: str, *, timeout: float = 60) -> list[str]:
    """The components the suite's Release file lists; raise ValueError if there are none."""
    release_url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    response = requests.get(release_url, timeout=timeout)
    response.raise_for_status()
    components = str(Release(response.text).get("Components", "")).split()
    if not components:
        raise ValueError(f"{release_url} lists no components")
    for component in components:
        if not _COMPONENT_RE.fullmatch(component):
            raise ValueError(f"{release_url} lists an invalid component name {component!r}")
    return components


def fetch_keyring(keyring: RepositoryKeyring, *, timeout: float = 60) -> bytes:
    """The keyring's contents; raise ValueError if it is too big or its SHA-256 differs."""
    parts = urlsplit(keyring.url)
    if parts.scheme == "file":
        contents = Path(parts.path).read_bytes()
    else:
        response = requests.get(keyring.url, timeout=timeout, stream=True)
        response.raise_for_status()
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > MAX_KEYRING_SIZE:
                raise ValueError(f"keyring {keyring.url} is larger than {MAX_KEYRING_SIZE} bytes")
            chunks.append(chunk)
        contents = b"".join(chunks)
    if len(contents) > MAX_KEYRING_SIZE:
        raise ValueError(f"keyring {keyring.url} is larger than {MAX_KEYRING_SIZE} bytes")
    actual = hashlib.sha256(contents).hexdigest()
    if keyring.sha256sum and actual != keyring.sha256sum.lower():
        raise ValueError(
            f"SHA-256 mismatch for keyring {keyring.url}: "
            f"got {actual}, expected {keyring.sha256sum}"
        )
    return contents


def _stanza(fields: Mapping[str, str]) -> str:
    return "".join(f"{key}: {value}\n" for key, value in fields.items())


def _make_traversable(path: Path) -> None:
    """Let other users (mmdebstrap's subordinate IDs) reach, not list, files below `path`."""
    path.chmod(path.stat().st_mode | 0o011)


class MmDebstrap(
    BaseTask[MmDebstrapData], task_type=TaskType.WORKER, name="mmdebstrap", version=1
):
    """Bootstrap a system tarball with mmdebstrap."""

    #: Files the customize hooks leave in the execute directory.
    OS_RELEASE = "os-release"
    DPKG_STATUS = "dpkg-status"
    WITH_INIT = "with-init"
    #: Debug log with mmdebstrap's command line and output.
    LOG_NAME = "mmdebstrap.log"

    def __init__(
        self,
        task_data: Mapping[str, Any],
        dynamic_task_data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(task_data, dynamic_task_data)
        self.host_sources: Path | None = None
        self.chroot_sources: Path | None = None
        #: Keyrings given to mmdebstrap with --keyring.
        self.keyrings: list[Path] = []
        #: Keyrings to copy into the system's CHROOT_KEYRINGS_DIRECTORY.
        self.installed_keyrings: list[Path] = []
        self.customization_script: Path | None = None

    # --- Scheduling -----------------------------------------------------------------

    @classmethod
    def analyze_worker(cls) -> dict[str, Any]:
        return {"mmdebstrap:available": shutil.which("mmdebstrap") is not None}

    def can_run_on(self, worker_metadata: Mapping[str, Any]) -> bool:
        if not worker_metadata.get("mmdebstrap:available", False):
            return False
        architectures = worker_metadata.get("system:architectures") or []
        return self.data.bootstrap_options.architecture in architectures

    def compute_dynamic_data(self, resolver: LookupResolver) -> BaseDynamicTaskData:
        options = self.data.bootstrap_options
        variant = options.variant.value if options.variant is not None else ""
        extra_packages = ",".join(sorted(options.extra_packages))
        return BaseDynamicTaskData(
            subject=self.data.bootstrap_repositories[0].suite,
            runtime_context=f"{options.architecture}:{variant}:{extra_packages}",
            configuration_context=options.architecture,
            parameter_summary=(
                f"{self.data.bootstrap_repositories[0].suite} {options.architecture}"
                + (f" ({variant})" if variant else "")
            ),
        )

    # --- Execution ------------------------------------------------------------------

    def configure_for_execution(self, download_directory: Path) -> bool:
        """Write the APT sources (host and system copies), keyrings and customization script."""
        download_directory.mkdir(parents=True, exist_ok=True)
        # apt runs as one of mmdebstrap's subordinate IDs and reads the sources' keyrings.
        _make_traversable(download_directory.parent)
        _make_traversable(download_directory)
        keyrings_directory = download_directory / "keyrings"
        keyrings_directory.mkdir(mode=0o755, exist_ok=True)
        keyrings_directory.chmod(0o755)

        host_stanzas: list[str] = []
        chroot_stanzas: list[str] = []
        for index, repository in enumerate(self.data.bootstrap_repositories):
            components = repository.components
            if components is None:
                components = suite_components(repository.mirror, repository.suite)
            fields = {
                "Types": " ".join(repository.types),
                "URIs": repository.mirror,
                "Suites": repository.suite,
                "Components": " ".join(components),
            }
            if repository.check_signature_with == CheckSignatureWith.NO_CHECK:
                fields["Trusted"] = "yes"
            host_fields = dict(fields)
            chroot_fields = dict(fields)
            if repository.check_signature_with == CheckSignatureWith.EXTERNAL:
                assert repository.keyring is not None
                contents = fetch_keyring(repository.keyring)
                suffix = ".asc" if contents.startswith(b"-----BEGIN") else ".gpg"
                keyring = keyrings_directory / f"keyring-repository-{index}{suffix}"
                keyring.write_bytes(contents)
                keyring.chmod(0o644)
                self.keyrings.append(keyring)
                if self.data.bootstrap_options.use_signed_by:
                    host_fields["Signed-By"] = str(keyring)
                    if repository.keyring.install:
                        chroot_fields["Signed-By"] = f"{CHROOT_KEYRINGS_DIRECTORY}/{keyring.name}"
                if repository.keyring.install:
                    self.installed_keyrings.append(keyring)
            host_stanzas.append(_stanza(host_fields))
            chroot_stanzas.append(_stanza(chroot_fields))

        self.host_sources = download_directory / "host.sources"
        self.chroot_sources = download_directory / "chroot.sources"
        self.host_sources.write_text("\n".join(host_stanzas), encoding="utf-8")
        self.chroot_sources.write_text("\n".join(chroot_stanzas), encoding="utf-8")
        for path in (self.host_sources, self.chroot_sources):
            path.chmod(0o644)
        log = self.open_debug_log_file(self.LOG_NAME)
        log.write(f"# {self.host_sources.name}\n{self.host_sources.read_text()}\n")
        log.write(f"# {self.chroot_sources.name}\n{self.chroot_sources.read_text()}\n")

        if self.data.customization_script is not None:
            self.customization_script = download_directory / "customization_script"
            self.customization_script.write_text(self.data.customization_script, encoding="utf-8")
            self.customization_script.chmod(0o644)
        return True

    def command_line(self, execute_directory: Path) -> list[str]:
        """mmdebstrap's command line (after `configure_for_execution`)."""
        if self.host_sources is None or self.chroot_sources is None:
            raise RuntimeError("configure_for_execution() has not run")
        options = self.data.bootstrap_options
        quote = shlex.quote

        def hook(script: str) -> str:
            return f"--customize-hook={script}"

        command = [
            "mmdebstrap",
            "--mode=unshare",
            "--format=tar",
            f"--architectures={options.architecture}",
            "--verbose",
            # Lets mmdebstrap bootstrap releases before bookworm (merged-/usr handling).
            "--hook-dir=/usr/share/mmdebstrap/hooks/maybe-jessie-or-older",
        ]
        if options.variant is not None:
            command.append(f"--variant={options.variant.value}")
        includes = [
            repository.keyring_package
            for repository in self.data.bootstrap_repositories
            if repository.keyring_package
        ] + options.extra_packages
        if includes:
            command.append("--include=" + ",".join(includes))
        command += [f"--keyring={keyring}" for keyring in self.keyrings]

        # The system's APT sources: ours, without the host's keyring paths.
        command += [
            hook('rm -f "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*'),
            hook(f"upload {quote(str(self.chroot_sources))} {CHROOT_SOURCES}"),
        ]
        if self.installed_keyrings:
            command.append(hook(f'mkdir -p "$1"{CHROOT_KEYRINGS_DIRECTORY}'))
            command += [
                hook(f"upload {quote(str(keyring))} {CHROOT_KEYRINGS_DIRECTORY}/{keyring.name}")
                for keyring in self.installed_keyrings
            ]
        # Host-specific files mmdebstrap copies in (a dangling resolv.conf link is harmless).
        command += [
            hook('rm -f "$1"/etc/hostname'),
            hook('test -h "$1"/etc/resolv.conf || rm -f "$1"/etc/resolv.conf'),
        ]
        if self.customization_script is not None:
            command += [
                hook(f"upload {quote(str(self.customization_script))} /debusine-customize"),
                hook('chmod 755 "$1"/debusine-customize'),
                hook('chroot "$1" /debusine-customize'),
                hook('rm -f "$1"/debusine-customize'),
            ]
        # What upload_artifacts reports (saved by mmdebstrap itself, as the worker's user).
        command += [
            hook(f"download /etc/os-release {quote(str(execute_directory / self.OS_RELEASE))}"),
            hook(
                f"download /var/lib/dpkg/status {quote(str(execute_directory / self.DPKG_STATUS))}"
            ),
            hook(
                'if test -x "$1"/sbin/init || test -h "$1"/sbin/init; '
                'then echo yes; else echo no; fi > "$1"/debusine-with-init'
            ),
            hook(f"download /debusine-with-init {quote(str(execute_directory / self.WITH_INIT))}"),
            hook('rm -f "$1"/debusine-with-init'),
        ]
        # Suite and mirror come from the sources file.
        command += ["", str(execute_directory / OUTPUT_FILENAME), "", str(self.host_sources)]
        return command

    def run(self, execute_directory: Path) -> bool:
        command = self.command_line(execute_directory)
        log = self.open_debug_log_file(self.LOG_NAME)
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        returncode = subprocess.run(
            command,
            cwd=execute_directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, "LC_ALL": "C.UTF-8", "XZ_DEFAULTS": XZ_OPTIONS},
        ).returncode
        log.write(f"# exit status {returncode}\n")
        return returncode == 0 and (execute_directory / OUTPUT_FILENAME).is_file()

    # --- Output ---------------------------------------------------------------------

    def system_tarball_artifact(self, execute_directory: Path) -> LocalArtifact:
        """The `debian:system-tarball` artifact of a successful run."""
        main_repository = self.data.bootstrap_repositories[0]
        os_release = read_os_release(execute_directory / self.OS_RELEASE)
        # jessie has no VERSION_CODENAME; unstable's os-release names the testing release.
        codename = os_release.get("VERSION_CODENAME") or main_repository.suite
        if main_repository.suite in ("unstable", "sid"):
            codename = "sid"
        options = self.data.bootstrap_options
        data = DebianSystemTarball(
            filename=OUTPUT_FILENAME,
            vendor=os_release.get("ID", "debian"),
            codename=codename,
            mirror=main_repository.mirror,
            variant=options.variant.value if options.variant is not None else None,
            pkglist=read_pkglist(execute_directory / self.DPKG_STATUS),
            architecture=options.architecture,
            # mmdebstrap always creates the device nodes in /dev.
            with_dev=True,
            with_init=(execute_directory / self.WITH_INIT).read_text().strip() == "yes",
        )
        return system_tarball(execute_directory / OUTPUT_FILENAME, data)

    def upload_artifacts(self, directory: Path, *, execution_success: bool) -> None:
        if not execution_success:
            return
        local = self.system_tarball_artifact(directory)
        files = {name: LocalFile.from_path(path) for name, path in local.files.items()}
        client = self.context.client()
        artifact = client.artifact_create(
            str(local.category),
            files,
            local.data_json(),
            workspace=self.context.workspace,
            work_request=self.context.work_request_id,
        )
        client.upload_artifact_files(artifact, files)
