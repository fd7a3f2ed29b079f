"""
Artifact categories and the shape of each category's `data`, as strict pydantic models.

Tasks build these models when they create artifacts, and the server validates the `data` of a
new artifact of a known category with `validate_artifact_data()`, so that what a task later
reads back (a source package's name, a tarball's architecture) is there and has the right
type. Field names and meanings are Debusine's, so that artifacts made by Debusine's own client
and worker validate here too. No Django here: workers and the client import these models.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


class ArtifactCategory(StrEnum):
    """The artifact categories whose data we know."""

    WORK_REQUEST_DEBUG_LOGS = "debusine:work-request-debug-logs"
    PACKAGE_BUILD_LOG = "debian:package-build-log"
    UPLOAD = "debian:upload"
    SOURCE_PACKAGE = "debian:source-package"
    BINARY_PACKAGE = "debian:binary-package"
    BINARY_PACKAGES = "debian:binary-packages"
    LINTIAN = "debian:lintian"
    AUTOPKGTEST = "debian:autopkgtest"
    SYSTEM_TARBALL = "debian:system-tarball"
    #: Used by tests; its data is free-form.
    TEST = "debusine:test"


class CollectionCategory(StrEnum):
    """The collection categories (Debusine's names)."""

    ENVIRONMENTS = "debian:environments"
    SUITE = "debian:suite"
    SUITE_LINTIAN = "debian:suite-lintian"
    PACKAGE_BUILD_LOGS = "debian:package-build-logs"
    ARCHIVE = "debian:archive"
    QA_RESULTS = "debian:qa-results"
    WORKFLOW_INTERNAL = "debusine:workflow-internal"
    TASK_CONFIGURATION = "debusine:task-configuration"
    TASK_HISTORY = "debusine:task-history"
    #: Used by tests.
    TEST = "debusine:test"


class ArtifactData(BaseModel):
    """Base of every artifact data model: unknown keys are errors, as in task data."""

    model_config = ConfigDict(extra="forbid")


class EmptyArtifactData(ArtifactData):
    """Data of categories that carry everything in their files (`{}`)."""


class DebianSourcePackage(ArtifactData):
    """`debian:source-package`: a .dsc and the files it lists."""

    name: str
    version: str
    type: Literal["dpkg"]
    #: The .dsc's fields; file lists (Files, Checksums-*) are lists of objects.
    dsc_fields: dict[str, Any]


class DebianBinaryPackage(ArtifactData):
    """`debian:binary-package`: one .deb or .udeb."""

    srcpkg_name: str
    srcpkg_version: str
    #: The fields of the package's DEBIAN/control.
    deb_fields: dict[str, Any]
    #: Names of the files of the package's control archive (control, md5sums, postinst...).
    deb_control_files: list[str]


class DebianBinaryPackages(ArtifactData):
    """`debian:binary-packages`: the .debs one build produced for one architecture."""

    srcpkg_name: str
    srcpkg_version: str
    version: str
    architecture: str
    #: Binary package names, in the order of the files.
    packages: list[str]


def _file_names(changes_fields: dict[str, Any]) -> list[str]:
    """The names in a .changes' Files field, refusing a field that is not a list of files."""
    files = changes_fields["Files"]
    if not isinstance(files, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in files
    ):
        raise ValueError("changes_fields.Files must be a list of objects with a name")
    return [entry["name"] for entry in files]


class DebianUpload(ArtifactData):
    """`debian:upload`: a .changes and the files it lists."""

    type: Literal["dpkg"]
    #: The .changes' fields; file lists (Files, Checksums-*) are lists of objects.
    changes_fields: dict[str, Any]

    @field_validator("changes_fields")
    @classmethod
    def files_match_architectures(cls, fields: dict[str, Any]) -> dict[str, Any]:
        """
        A source upload carries exactly one .dsc and a binary upload some .debs: tasks pick
        an upload's source package or binaries by these rules, so an upload that breaks them
        would be misread later rather than refused now.
        """
        for key in ("Architecture", "Files"):
            if key not in fields:
                raise ValueError(f"changes_fields must contain {key}")
        if not isinstance(fields["Architecture"], str):
            raise ValueError("changes_fields.Architecture must be a string")
        architectures = set(fields["Architecture"].split())
        names = _file_names(fields)
        sources = [name for name in names if name.endswith(".dsc")]
        binaries = [name for name in names if name.endswith((".deb", ".udeb"))]
        if "source" in architectures and len(sources) != 1:
            raise ValueError(f"a source upload must list exactly one .dsc, not {sources}")
        if "source" not in architectures and sources:
            raise ValueError(f"a binary-only upload cannot list a .dsc ({sources})")
        if architectures == {"source"} and binaries:
            raise ValueError(f"a source-only upload cannot list binaries ({binaries})")
        if architectures - {"source"} and not binaries:
            raise ValueError("a binary upload must list at least one .deb or .udeb")
        return fields


class DebianPackageBuildLog(ArtifactData):
    """`debian:package-build-log`: the log of one build (one `.build` file)."""

    source: str
    version: str
    architecture: str | None = None
    filename: str
    #: dose-debcheck's report when the build dependencies could not be installed.
    bd_uninstallable: dict[str, Any] | None = None


class DebianLintianSeverity(StrEnum):
    """Lintian's tag severities, plus `overridden` and `classification`."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    PEDANTIC = "pedantic"
    EXPERIMENTAL = "experimental"
    OVERRIDDEN = "overridden"
    CLASSIFICATION = "classification"


class DebianLintianSummary(ArtifactData):
    """What a lintian run found, summed up."""

    tags_count_by_severity: dict[DebianLintianSeverity, int]
    #: Package name -> the file lintian checked.
    package_filename: dict[str, str]
    tags_found: list[str]
    overridden_tags_found: list[str]
    lintian_version: str
    distribution: str


class DebianLintian(ArtifactData):
    """`debian:lintian`: lintian's output (lintian.txt, analysis.json) and its summary."""

    #: Optional because Debusine's older workers do not send it.
    architecture: str | None = None
    summary: DebianLintianSummary


class DebianAutopkgtestResult(ArtifactData):
    """The outcome of one autopkgtest test."""

    status: Literal["PASS", "FAIL", "FLAKY", "SKIP"]
    details: str | None = None


class DebianAutopkgtestSource(ArtifactData):
    """The source package an autopkgtest run tested."""

    name: str
    version: str
    url: str


class DebianAutopkgtest(ArtifactData):
    """`debian:autopkgtest`: autopkgtest's output directory and its results."""

    #: Test name -> its result.
    results: dict[str, DebianAutopkgtestResult]
    cmdline: str
    source_package: DebianAutopkgtestSource
    architecture: str
    distribution: str


class DebianSystemTarball(ArtifactData):
    """`debian:system-tarball`: a bootstrapped system (one tarball) to run tasks in."""

    filename: str
    vendor: str
    codename: str
    mirror: str
    #: Optional because Debusine's older workers do not send it.
    components: list[str] | None = None
    variant: str | None
    #: Installed package name -> version.
    pkglist: dict[str, str]
    architecture: str
    with_dev: bool
    with_init: bool


_DATA_MODELS: dict[str, type[BaseModel]] = {
    ArtifactCategory.WORK_REQUEST_DEBUG_LOGS: EmptyArtifactData,
    ArtifactCategory.PACKAGE_BUILD_LOG: DebianPackageBuildLog,
    ArtifactCategory.UPLOAD: DebianUpload,
    ArtifactCategory.SOURCE_PACKAGE: DebianSourcePackage,
    ArtifactCategory.BINARY_PACKAGE: DebianBinaryPackage,
    ArtifactCategory.BINARY_PACKAGES: DebianBinaryPackages,
    ArtifactCategory.LINTIAN: DebianLintian,
    ArtifactCategory.AUTOPKGTEST: DebianAutopkgtest,
    ArtifactCategory.SYSTEM_TARBALL: DebianSystemTarball,
}


def data_model(category: str) -> type[BaseModel] | None:
    """
    The model of `category`'s data, or None when its data is not checked: categories we do not
    know (accepted as they are, as Debusine servers do) and `debusine:test`.
    """
    return _DATA_MODELS.get(category)


class ArtifactDataError(ValueError):
    """Artifact data that does not fit its category's model; `problems` says where and why."""

    def __init__(self, category: str, problems: list[tuple[str, str]]) -> None:
        self.category = category
        #: (location, message) pairs; locations are dotted, from `data` (`data.summary.x`).
        self.problems = problems
        listed = "; ".join(f"{location}: {message}" for location, message in problems)
        super().__init__(f"invalid data for {category}: {listed}")


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    return [
        (".".join(["data", *(str(part) for part in item["loc"])]), item["msg"])
        for item in error.errors(include_url=False)
    ]


def validate_artifact_data(category: str, data: Any) -> dict[str, Any]:
    """
    `data` checked against `category`'s model, as JSON to store.

    Only the keys the caller gave are returned (defaults are not added), so that valid data is
    stored as it was sent; values are those the model coerced them to. Data of a category
    without a model must still be a JSON object, and is returned unchanged.
    """
    if not isinstance(data, dict):
        raise ArtifactDataError(category, [("data", "must be an object")])
    model = data_model(category)
    if model is None:
        return data
    try:
        validated = model.model_validate(data)
    except ValidationError as error:
        raise ArtifactDataError(category, _problems(error)) from None
    return validated.model_dump(mode="json", exclude_unset=True)
