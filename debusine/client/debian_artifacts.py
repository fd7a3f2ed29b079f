"""
Artifacts made from local Debian files (`import-debian-artifact`).

- a `.changes` gives a `debian:upload` (the .changes and every file it lists), then a
  `debian:source-package` when it carries a .dsc, then one `debian:binary-package` per .deb or
  .udeb, then one `debian:binary-packages` per architecture;
- a `.dsc` gives a `debian:source-package`;
- a `.deb` or `.udeb` gives a `debian:binary-package`.
Every file a .changes or .dsc lists must be next to it with the SHA-256 it declares. The
parsing and checks are `debusine.artifacts.local`'s, shared with the tasks that make the same
artifacts; this module only turns them into what the client sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debusine.artifacts.local import (
    LocalArtifact,
    LocalArtifactError,
    artifacts_from_changes,
    binary_package_from_deb,
    source_package_from_dsc,
)
from debusine.client.client import LocalFile
from debusine.client.errors import LocalFileError, UsageError


@dataclass(frozen=True)
class PreparedArtifact:
    """An artifact ready to be created: its category, files (by artifact path) and data."""

    category: str
    files: dict[str, LocalFile]
    data: dict[str, Any]

    @classmethod
    def from_local(cls, artifact: LocalArtifact) -> PreparedArtifact:
        files = {name: LocalFile.from_path(path) for name, path in artifact.files.items()}
        return cls(str(artifact.category), files, artifact.data_json())


def _local_artifacts(path: Path) -> list[LocalArtifact]:
    if path.suffix == ".changes":
        return artifacts_from_changes(path)
    if path.suffix == ".dsc":
        return [source_package_from_dsc(path)]
    if path.suffix in (".deb", ".udeb"):
        return [binary_package_from_deb(path)]
    raise UsageError(f"{path}: expected a .changes, .dsc, .deb or .udeb file")


def prepare(path: Path) -> list[PreparedArtifact]:
    """The artifacts to create for a .changes, .dsc, .deb or .udeb (the first is the main one)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        artifacts = _local_artifacts(path)
    except LocalArtifactError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise LocalFileError.from_os_error(error, error.filename or path) from None
    return [PreparedArtifact.from_local(artifact) for artifact in artifacts]
