"""
Artifacts made from local Debian files (`import-debian-artifact`), parsed with python-debian.

- a `.changes` gives a `debian:upload` (the .changes and every file it lists), then a
  `debian:source-package` when it carries a .dsc, then one `debian:binary-package` per .deb or
  .udeb, then one `debian:binary-packages` per architecture;
- a `.dsc` gives a `debian:source-package`;
- a `.deb` or `.udeb` gives a `debian:binary-package`.
Every file a .changes or .dsc lists must be next to it with the SHA-256 it declares.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debian import deb822, debfile
from debian.arfile import ArError

from debusine.client.client import LocalFile
from debusine.client.errors import UsageError


@dataclass(frozen=True)
class PreparedArtifact:
    """An artifact ready to be created: its category, files (by artifact path) and data."""

    category: str
    files: dict[str, LocalFile]
    data: dict[str, Any]


def fields_as_json(paragraph: deb822.Deb822) -> dict[str, Any]:
    """A control paragraph as JSON: multi-line file lists become lists of objects."""
    fields: dict[str, Any] = {}
    for key, value in paragraph.items():
        if isinstance(value, list):
            fields[key] = [dict(entry) for entry in value]
        else:
            fields[key] = str(value)
    return fields


def _read_paragraph(path: Path, kind: type[deb822.Deb822]) -> deb822.Deb822:
    try:
        with path.open("rb") as contents:
            paragraph = kind(contents)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    if not paragraph:
        raise UsageError(f"{path} is not a Debian control file")
    return paragraph


def listed_files(paragraph: deb822.Deb822, path: Path) -> dict[str, LocalFile]:
    """The files a .changes or .dsc lists, checked against their declared SHA-256 and size."""
    entries = paragraph.get("Checksums-Sha256")
    if not entries:
        raise UsageError(f"{path} has no Checksums-Sha256 field")
    files: dict[str, LocalFile] = {}
    for entry in entries:
        name = entry["name"]
        local_path = path.parent / name
        if "/" in name or not local_path.is_file():
            raise UsageError(f"{path} lists {name}, which is not in {path.parent}")
        local = LocalFile.from_path(local_path)
        if local.sha256 != entry["sha256"] or local.size != int(entry["size"]):
            raise UsageError(f"{local_path} does not match the SHA-256 and size {path} lists")
        files[name] = local
    return files


def source_package(dsc_path: Path) -> PreparedArtifact:
    dsc = _read_paragraph(dsc_path, deb822.Dsc)
    for key in ("Source", "Version"):
        if key not in dsc:
            raise UsageError(f"{dsc_path} has no {key} field")
    files = {dsc_path.name: LocalFile.from_path(dsc_path), **listed_files(dsc, dsc_path)}
    data = {
        "name": str(dsc["Source"]),
        "version": str(dsc["Version"]),
        "type": "dpkg",
        "dsc_fields": fields_as_json(dsc),
    }
    return PreparedArtifact("debian:source-package", files, data)


def _source_of(deb_fields: dict[str, Any]) -> tuple[str, str]:
    """Source package name and version of a binary package (`Source: name (version)`)."""
    source = deb_fields.get("Source", deb_fields["Package"]).strip()
    name, _, rest = source.partition(" ")
    version = rest.strip("() ") or deb_fields["Version"]
    return name, version


def binary_package(deb_path: Path) -> PreparedArtifact:
    try:
        package = debfile.DebFile(str(deb_path))
        control = package.debcontrol()
        control_files = sorted(
            name.removeprefix("./")
            for name in package.control.tgz().getnames()
            if name not in (".", "./")
        )
    except (OSError, debfile.DebError, ArError, KeyError) as error:
        raise UsageError(f"{deb_path} is not a readable Debian binary package: {error}") from None
    deb_fields = fields_as_json(control)
    for key in ("Package", "Version", "Architecture"):
        if key not in deb_fields:
            raise UsageError(f"{deb_path} has no {key} field")
    srcpkg_name, srcpkg_version = _source_of(deb_fields)
    data = {
        "srcpkg_name": srcpkg_name,
        "srcpkg_version": srcpkg_version,
        "deb_fields": deb_fields,
        "deb_control_files": control_files,
    }
    return PreparedArtifact(
        "debian:binary-package", {deb_path.name: LocalFile.from_path(deb_path)}, data
    )


def upload(changes_path: Path) -> list[PreparedArtifact]:
    """The upload, then its source package, binary packages and per-architecture sets."""
    changes = _read_paragraph(changes_path, deb822.Changes)
    files = listed_files(changes, changes_path)
    artifacts = [
        PreparedArtifact(
            "debian:upload",
            {changes_path.name: LocalFile.from_path(changes_path), **files},
            {"type": "dpkg", "changes_fields": fields_as_json(changes)},
        )
    ]
    artifacts += [
        source_package(files[name].path) for name in sorted(files) if name.endswith(".dsc")
    ]
    binaries = [
        binary_package(files[name].path)
        for name in sorted(files)
        if name.endswith((".deb", ".udeb"))
    ]
    artifacts += binaries
    by_architecture: dict[str, list[PreparedArtifact]] = defaultdict(list)
    for binary in binaries:
        by_architecture[binary.data["deb_fields"]["Architecture"]].append(binary)
    for architecture, packages in sorted(by_architecture.items()):
        first = packages[0].data
        artifacts.append(
            PreparedArtifact(
                "debian:binary-packages",
                {name: local for package in packages for name, local in package.files.items()},
                {
                    "srcpkg_name": first["srcpkg_name"],
                    "srcpkg_version": first["srcpkg_version"],
                    "version": first["deb_fields"]["Version"],
                    "architecture": architecture,
                    "packages": [package.data["deb_fields"]["Package"] for package in packages],
                },
            )
        )
    return artifacts


def prepare(path: Path) -> list[PreparedArtifact]:
    """The artifacts to create for a .changes, .dsc, .deb or .udeb (the first is the main one)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.suffix == ".changes":
        return upload(path)
    if path.suffix == ".dsc":
        return [source_package(path)]
    if path.suffix in (".deb", ".udeb"):
        return [binary_package(path)]
    raise UsageError(f"{path}: expected a .changes, .dsc, .deb or .udeb file")
