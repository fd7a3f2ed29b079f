"""
Artifacts about to be created from local files: their category, data and files.

Tasks (sbuild, lintian, mmdebstrap...) and the client's `import-debian-artifact` build them
with the functions here, which read what the data says from the files themselves (a .dsc's
fields, a .deb's control) and check that every file a .changes or .dsc lists is present with
the SHA-256 and size it declares, so that a bad input is refused before anything is sent.

python-debian is imported only by the functions that parse Debian files: the server imports
this package for `validate_artifact_data()` and does not need it.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from debusine.artifacts.models import (
    ArtifactCategory,
    DebianAutopkgtest,
    DebianBinaryPackage,
    DebianBinaryPackages,
    DebianLintian,
    DebianLintianSummary,
    DebianPackageBuildLog,
    DebianSourcePackage,
    DebianSystemTarball,
    DebianUpload,
    data_model,
)
from debusine.protocol.artifacts import check_artifact_path

if TYPE_CHECKING:
    from debian import deb822

#: Content type of the text logs we create, so that the web UI shows them inline.
TEXT_PLAIN = "text/plain; charset=utf-8"

#: What a system tarball may be compressed with (tar recognises each when extracting).
TARBALL_SUFFIXES = (".tar.xz", ".tar.zst", ".tar.gz", ".tar")

_READ_SIZE = 1024 * 1024


class LocalArtifactError(ValueError):
    """Local files that cannot make the artifact asked for; the message says why, on one line."""


@dataclass
class LocalArtifact:
    """An artifact to create: `files` maps each path in the artifact to a local file."""

    category: ArtifactCategory
    data: BaseModel
    files: dict[str, Path]
    #: Artifact path -> content type, for the files whose type we know.
    content_types: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        model = data_model(self.category)
        if model is not None and not isinstance(self.data, model):
            raise TypeError(f"{self.category} data must be a {model.__name__}")
        for name in self.files:
            try:
                check_artifact_path(name)
            except ValueError as error:
                raise LocalArtifactError(str(error)) from None

    def data_json(self) -> dict[str, Any]:
        """The data as sent to the server."""
        return self.data.model_dump(mode="json")


def deb822_fields(paragraph: Mapping[str, Any]) -> dict[str, Any]:
    """
    A control paragraph as JSON: multi-line file lists (Files, Checksums-Sha256...) become
    lists of objects (`{"name": ..., "size": ..., "sha256": ...}`), other values strings.
    """
    fields: dict[str, Any] = {}
    for key, value in paragraph.items():
        if isinstance(value, list):
            fields[key] = [{str(k): str(v) for k, v in entry.items()} for entry in value]
        else:
            fields[key] = str(value)
    return fields


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, as lowercase hexadecimal."""
    digest = hashlib.sha256()
    with path.open("rb") as contents:
        while block := contents.read(_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


def _require_file(path: Path, suffixes: tuple[str, ...]) -> None:
    if not path.is_file():
        raise LocalArtifactError(f"{path}: no such file")
    if not path.name.endswith(suffixes):
        raise LocalArtifactError(f"{path}: expected a {' or '.join(suffixes)} file")


def _require_fields(fields: Mapping[str, Any], keys: Iterable[str], path: Path) -> None:
    for key in keys:
        if key not in fields:
            raise LocalArtifactError(f"{path} has no {key} field")


def _read_control_file(path: Path, kind: type[deb822.Deb822]) -> deb822.Deb822:
    try:
        with path.open("rb") as contents:
            paragraph = kind(contents)
    except OSError as error:
        raise LocalArtifactError(f"cannot read {path}: {error.strerror}") from None
    if not paragraph:
        raise LocalArtifactError(f"{path} is not a Debian control file")
    return paragraph


def listed_files(fields: Mapping[str, Any], path: Path) -> dict[str, Path]:
    """
    The files a .changes or .dsc (`path`, parsed into `fields`) lists, by name, each checked
    to be next to it with the SHA-256 and size it declares.
    """
    entries = fields.get("Checksums-Sha256")
    if not entries:
        raise LocalArtifactError(f"{path} has no Checksums-Sha256 field")
    files: dict[str, Path] = {}
    for entry in entries:
        name = entry["name"]
        local = path.parent / name
        if "/" in name or not local.is_file():
            raise LocalArtifactError(f"{path} lists {name}, which is not in {path.parent}")
        if local.stat().st_size != int(entry["size"]) or file_sha256(local) != entry["sha256"]:
            raise LocalArtifactError(f"{local} does not match the SHA-256 and size {path} lists")
        files[name] = local
    return files


def source_package_from_dsc(dsc: Path) -> LocalArtifact:
    """A `debian:source-package`: the .dsc and every file it lists."""
    from debian import deb822

    _require_file(dsc, (".dsc",))
    fields = deb822_fields(_read_control_file(dsc, deb822.Dsc))
    _require_fields(fields, ("Source", "Version"), dsc)
    data = DebianSourcePackage(
        name=fields["Source"], version=fields["Version"], type="dpkg", dsc_fields=fields
    )
    files = {dsc.name: dsc, **listed_files(fields, dsc)}
    return LocalArtifact(ArtifactCategory.SOURCE_PACKAGE, data, files)


def _read_deb(deb: Path) -> tuple[dict[str, Any], list[str]]:
    """A .deb's control fields and the names of its control archive's files."""
    from debian import debfile
    from debian.arfile import ArError

    try:
        with debfile.DebFile(deb) as package:
            control = package.debcontrol()
            names = package.control.tgz().getnames()
    except (OSError, debfile.DebError, ArError, KeyError, tarfile.TarError) as error:
        raise LocalArtifactError(
            f"{deb} is not a readable Debian binary package: {error}"
        ) from None
    control_files = sorted(name.removeprefix("./") for name in names if name not in (".", "./"))
    return deb822_fields(control), control_files


def _source_of(deb_fields: Mapping[str, Any]) -> tuple[str, str]:
    """
    Source package name and version of a binary package. `Source:` is absent when it equals
    the package name, and carries `(version)` when the versions differ (binNMUs).
    """
    source = str(deb_fields.get("Source", deb_fields["Package"])).strip()
    name, _, rest = source.partition(" ")
    version = rest.strip("() ") or str(deb_fields["Version"])
    return name, version


def binary_package_from_deb(deb: Path) -> LocalArtifact:
    """A `debian:binary-package`: one .deb or .udeb."""
    _require_file(deb, (".deb", ".udeb"))
    fields, control_files = _read_deb(deb)
    _require_fields(fields, ("Package", "Version", "Architecture"), deb)
    srcpkg_name, srcpkg_version = _source_of(fields)
    data = DebianBinaryPackage(
        srcpkg_name=srcpkg_name,
        srcpkg_version=srcpkg_version,
        deb_fields=fields,
        deb_control_files=control_files,
    )
    return LocalArtifact(ArtifactCategory.BINARY_PACKAGE, data, {deb.name: deb})


def binary_packages_from_debs(
    debs: list[Path], *, srcpkg_name: str, srcpkg_version: str, version: str, architecture: str
) -> LocalArtifact:
    """A `debian:binary-packages`: the .debs of one build for one architecture."""
    if not debs:
        raise LocalArtifactError("a binary-packages artifact needs at least one .deb")
    packages: list[str] = []
    files: dict[str, Path] = {}
    for deb in debs:
        _require_file(deb, (".deb", ".udeb"))
        if deb.name in files:
            raise LocalArtifactError(f"{deb.name} is given twice")
        fields, _ = _read_deb(deb)
        _require_fields(fields, ("Package",), deb)
        packages.append(fields["Package"])
        files[deb.name] = deb
    data = DebianBinaryPackages(
        srcpkg_name=srcpkg_name,
        srcpkg_version=srcpkg_version,
        version=version,
        architecture=architecture,
        packages=packages,
    )
    return LocalArtifact(ArtifactCategory.BINARY_PACKAGES, data, files)


def upload_from_changes(changes: Path) -> LocalArtifact:
    """A `debian:upload`: the .changes and every file it lists."""
    from debian import deb822

    _require_file(changes, (".changes",))
    fields = deb822_fields(_read_control_file(changes, deb822.Changes))
    files = {changes.name: changes, **listed_files(fields, changes)}
    try:
        data = DebianUpload(type="dpkg", changes_fields=fields)
    except ValidationError as error:
        # pydantic's message spans lines; the first problem says what is wrong.
        problem = error.errors(include_url=False)[0]["msg"]
        raise LocalArtifactError(f"{changes}: {problem}") from None
    return LocalArtifact(ArtifactCategory.UPLOAD, data, files)


def artifacts_from_changes(changes: Path) -> list[LocalArtifact]:
    """
    Everything an upload holds, as `import-debian-artifact` and builds record it: the upload,
    then its source package (if any), one binary package per .deb or .udeb, and one set of
    binary packages per architecture.
    """
    upload = upload_from_changes(changes)
    names = sorted(upload.files)
    artifacts = [upload]
    artifacts += [
        source_package_from_dsc(upload.files[name]) for name in names if name.endswith(".dsc")
    ]
    binaries = [
        binary_package_from_deb(upload.files[name])
        for name in names
        if name.endswith((".deb", ".udeb"))
    ]
    artifacts += binaries
    artifacts += _binary_package_sets(binaries)
    return artifacts


def _binary_package_sets(binaries: list[LocalArtifact]) -> list[LocalArtifact]:
    """One `debian:binary-packages` per architecture of `binaries` (binary-package artifacts)."""
    by_architecture: dict[str, list[DebianBinaryPackage]] = defaultdict(list)
    debs: dict[str, list[Path]] = defaultdict(list)
    for binary in binaries:
        assert isinstance(binary.data, DebianBinaryPackage)
        architecture = binary.data.deb_fields["Architecture"]
        by_architecture[architecture].append(binary.data)
        debs[architecture] += binary.files.values()
    sets = []
    for architecture, packages in sorted(by_architecture.items()):
        first = packages[0]
        sets.append(
            binary_packages_from_debs(
                debs[architecture],
                srcpkg_name=first.srcpkg_name,
                srcpkg_version=first.srcpkg_version,
                version=first.deb_fields["Version"],
                architecture=architecture,
            )
        )
    return sets


def package_build_log(
    path: Path, *, source: str, version: str, architecture: str | None
) -> LocalArtifact:
    """A `debian:package-build-log`: one `.build` file, as sbuild names its logs."""
    _require_file(path, (".build",))
    data = DebianPackageBuildLog(
        source=source, version=version, architecture=architecture, filename=path.name
    )
    return LocalArtifact(
        ArtifactCategory.PACKAGE_BUILD_LOG,
        data,
        {path.name: path},
        content_types={path.name: TEXT_PLAIN},
    )


def system_tarball(path: Path, data: DebianSystemTarball) -> LocalArtifact:
    """A `debian:system-tarball`: one tarball; `data.filename` becomes its name."""
    _require_file(path, TARBALL_SUFFIXES)
    data = data.model_copy(update={"filename": path.name})
    return LocalArtifact(ArtifactCategory.SYSTEM_TARBALL, data, {path.name: path})


def _check_files(files: Mapping[str, Path]) -> dict[str, Path]:
    for name, path in files.items():
        if not path.is_file():
            raise LocalArtifactError(f"{path} (for {name}): no such file")
    return dict(files)


def lintian_artifact(
    files: dict[str, Path], summary: DebianLintianSummary, *, architecture: str | None = None
) -> LocalArtifact:
    """
    A `debian:lintian`: lintian's text output as `lintian.txt` and its parsed tags as
    `analysis.json` (both required: the web UI and QA workflows read them), plus any others.
    """
    checked = _check_files(files)
    missing = sorted({"lintian.txt", "analysis.json"} - set(checked))
    if missing:
        raise LocalArtifactError(f"a lintian artifact needs {', '.join(missing)}")
    try:
        json.loads(checked["analysis.json"].read_bytes())
    except ValueError as error:
        raise LocalArtifactError(f"analysis.json is not valid JSON: {error}") from None
    return LocalArtifact(
        ArtifactCategory.LINTIAN,
        DebianLintian(architecture=architecture, summary=summary),
        checked,
        content_types={"lintian.txt": TEXT_PLAIN, "analysis.json": "application/json"},
    )


def autopkgtest_artifact(files: dict[str, Path], data: DebianAutopkgtest) -> LocalArtifact:
    """A `debian:autopkgtest`: autopkgtest's output directory (paths relative to it)."""
    return LocalArtifact(ArtifactCategory.AUTOPKGTEST, data, _check_files(files))
