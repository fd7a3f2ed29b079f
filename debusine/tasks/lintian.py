"""
The `lintian` task: check source and binary packages with lintian.

Input: a source package (or upload) and/or binary packages. Output: up to three `debian:lintian`
artifacts, one per analysis enabled in `output` (the source package, the `Architecture: all`
binaries, the other binaries), each holding lintian's whole text output (`lintian.txt`) and
the tags of its packages (`analysis.json`), related (`relates-to`) to the input artifacts.
The task fails when a tag of severity `fail_on_severity` or above is found.

Where lintian runs: with an `environment`, inside it (the unshare executor), after installing
lintian there with APT, so that the checks are those of the target distribution's lintian, as
Debusine does (this needs the network and takes about 30 s). Without an environment (allowed by
the task data), the worker's own lintian is used (about 2 s).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import textwrap
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from debian import deb822, debfile
from pydantic import BaseModel, ConfigDict, Field, model_validator

from debusine.artifacts.local import LocalArtifact, lintian_artifact
from debusine.artifacts.models import DebianLintianSummary
from debusine.tasks.base import LookupResolver
from debusine.tasks.executor_task import ExecutorTask
from debusine.tasks.executors.unshare import UnshareExecutor
from debusine.tasks.models import (
    BaseDynamicTaskDataWithExecutor,
    BaseTaskDataWithExecutor,
    DatabaseId,
    LookupMultiple,
    LookupSingle,
    Name,
    Names,
    ResolvedIds,
)

#: Lintian's one-letter codes, from the most to the least severe. `masked` tags are dropped.
SEVERITY_CODES = {
    "E": "error",
    "W": "warning",
    "I": "info",
    "P": "pedantic",
    "X": "experimental",
    "O": "overridden",
    "C": "classification",
    "M": "masked",
}
#: Severity name -> rank (higher: more severe), as Debusine orders them for fail_on_severity.
SEVERITY_RANK = {name: rank for rank, name in enumerate(reversed(SEVERITY_CODES.values()))}
#: Severities that are parsed but never reported.
IGNORED_SEVERITIES = frozenset({"masked"})

#: Name of lintian's output in the execute directory and in the artifacts.
LINTIAN_OUTPUT = "lintian.txt"
#: Where the input files go inside an environment.
GUEST_INPUT = "/srv/debusine-lintian-input"

_TAG_LINE = re.compile(
    r"(?P<code>[A-Z]): (?P<package>\S+(?: source| udeb)?): (?P<tag>\S+)(?: (?P<rest>.*))?"
)
_POINTER = re.compile(r"(?P<note>.*?)\s*\[(?P<pointer>[^\]]*)\]")
#: Bullseye's lintian repeats each tag alone ("W: tag-name") after its explanation.
_BARE_TAG_LINE = re.compile(r"[A-Z]: \S+")


class LintianFailOnSeverity(StrEnum):
    """Values of `fail_on_severity`."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    PEDANTIC = "pedantic"
    EXPERIMENTAL = "experimental"
    OVERRIDDEN = "overridden"
    NONE = "none"


class LintianPackageType(StrEnum):
    """What an analysis covers (and the key of its `output` switch)."""

    SOURCE = "source"
    BINARY_ALL = "binary-all"
    BINARY_ANY = "binary-any"


class LintianInput(BaseModel):
    """`input` of the lintian task: at least one of the two."""

    model_config = ConfigDict(extra="forbid")

    source_artifact: LookupSingle | None = None
    binary_artifacts: LookupMultiple = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_some_input(self) -> LintianInput:
        if self.source_artifact is None and not self.binary_artifacts:
            raise ValueError("one of source_artifact or binary_artifacts must be set")
        return self


class LintianOutput(BaseModel):
    """`output` of the lintian task: which analyses to produce."""

    model_config = ConfigDict(extra="forbid")

    source_analysis: bool = True
    binary_all_analysis: bool = True
    binary_any_analysis: bool = True

    def enabled(self, package_type: LintianPackageType) -> bool:
        return {
            LintianPackageType.SOURCE: self.source_analysis,
            LintianPackageType.BINARY_ALL: self.binary_all_analysis,
            LintianPackageType.BINARY_ANY: self.binary_any_analysis,
        }[package_type]


class LintianData(BaseTaskDataWithExecutor):
    """Data of the `lintian` task."""

    input: LintianInput
    output: LintianOutput = Field(default_factory=LintianOutput)
    #: Distribution the packages are meant for, recorded in the summaries ("vendor:codename").
    target_distribution: Name = "debian:unstable"
    #: Only these tags (lintian `--tags`).
    include_tags: Names = Field(default_factory=list)
    #: Not these tags (lintian `--suppress-tags`).
    exclude_tags: Names = Field(default_factory=list)
    #: The task fails if a tag of this severity or a more severe one is found.
    fail_on_severity: LintianFailOnSeverity = LintianFailOnSeverity.ERROR
    #: Architecture of the environment to look up (default: the worker's).
    host_architecture: Name | None = None


class LintianDynamicData(BaseDynamicTaskDataWithExecutor):
    """Dynamic data of the `lintian` task."""

    input_source_artifact_id: DatabaseId | None = None
    input_binary_artifacts_ids: ResolvedIds = Field(default_factory=list)


# --- Output parsing ------------------------------------------------------------------------


def parse_tag_line(line: str) -> dict[str, str] | None:
    """
    The tag reported by one line of lintian's output (`E: pkg source: tag note [pointer]`), as
    a dictionary with severity, package, tag, note and pointer (explanation and comment
    empty); None for a line repeating a tag name alone. ValueError if it is not a tag line.
    """
    match = _TAG_LINE.fullmatch(line)
    if match is None:
        if _BARE_TAG_LINE.fullmatch(line) and line[0] in SEVERITY_CODES:
            return None
        raise ValueError(f"cannot parse lintian output line: {line!r}")
    code = match["code"]
    if code not in SEVERITY_CODES:
        raise ValueError(f"unknown lintian severity {code!r} in line {line!r}")
    rest = (match["rest"] or "").strip()
    note, pointer = rest, ""
    if pointer_match := _POINTER.fullmatch(rest):
        note, pointer = pointer_match["note"], pointer_match["pointer"]
    return {
        "severity": SEVERITY_CODES[code],
        "package": match["package"],
        "tag": match["tag"],
        "explanation": "",
        "comment": "",
        "note": note,
        "pointer": pointer,
    }


def _text_of(lines: list[str]) -> str:
    return textwrap.dedent("\n".join(lines)).strip()


def parse_lintian_output(lines: Iterable[str]) -> list[dict[str, str]]:
    """
    The tags of lintian's output (with `--info --show-overrides`), in output order.

    Each tag is preceded by a line `N:`; override comments sit between that line and the
    tag (`N: comment`), the explanation (`--info`) follows the tag (`N:   text`).
    """
    tags: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    explanation: list[str] = []
    comment: list[str] = []
    in_comment = False

    def finish_current() -> None:
        if current is not None and current["severity"] not in IGNORED_SEVERITIES:
            current["explanation"] = _text_of(explanation)
            tags.append(current)

    for raw in lines:
        line = raw.rstrip("\n")
        if line == "N:":
            # The separator before the next tag (and its override comment, if any).
            in_comment = True
            continue
        if line.startswith("N:"):
            text = line[3:] if line.startswith("N: ") else line[2:]
            (comment if in_comment else explanation).append(text)
            continue
        if not line.strip():
            continue
        tag = parse_tag_line(line)
        if tag is None:
            continue
        finish_current()
        current = tag
        current["comment"] = _text_of(comment)
        explanation, comment, in_comment = [], [], False
    finish_current()
    return tags


def severity_counts() -> dict[str, int]:
    """Every reported severity, with 0."""
    return {name: 0 for name in SEVERITY_CODES.values() if name not in IGNORED_SEVERITIES}


def sort_tags(tags: list[dict[str, str]]) -> list[dict[str, str]]:
    """Tags by package, then from the most severe, then by tag and note."""
    return sorted(
        tags, key=lambda t: (t["package"], -SEVERITY_RANK[t["severity"]], t["tag"], t["note"])
    )


def make_analysis(
    tags: list[dict[str, str]],
    packages: set[str],
    package_files: dict[str, str],
    *,
    lintian_version: str,
    distribution: str,
) -> dict[str, Any]:
    """
    The analysis (`analysis.json`) of the `packages` (lintian's names: `hello source`,
    `hello`): their tags (package names without " source"), and the summary.
    """
    counts = severity_counts()
    found: set[str] = set()
    overridden: set[str] = set()
    filenames: dict[str, str] = {}
    selected: list[dict[str, str]] = []
    for tag in sort_tags(tags):
        if tag["package"] not in packages:
            continue
        name = tag["package"].removesuffix(" source").removesuffix(" udeb")
        if tag["package"] in package_files:
            filenames[name] = package_files[tag["package"]]
        selected.append({**tag, "package": name})
        counts[tag["severity"]] += 1
        (overridden if tag["severity"] == "overridden" else found).add(tag["tag"])
    summary = {
        "tags_count_by_severity": counts,
        "package_filename": filenames,
        "tags_found": sorted(found),
        "overridden_tags_found": sorted(overridden),
        "lintian_version": lintian_version,
        "distribution": distribution,
    }
    return {"tags": selected, "summary": summary, "version": Lintian.TASK_VERSION}


def fails_on(tags: list[dict[str, str]], fail_on_severity: str) -> bool:
    """Whether a tag is at least as severe as `fail_on_severity` ("none": never)."""
    if fail_on_severity == LintianFailOnSeverity.NONE:
        return False
    threshold = SEVERITY_RANK[fail_on_severity]
    return any(SEVERITY_RANK[tag["severity"]] >= threshold for tag in tags)


def package_of_file(path: Path) -> tuple[str, LintianPackageType] | None:
    """Lintian's name of the package in `path` (a .dsc, .deb or .udeb) and its type."""
    if path.suffix in (".deb", ".udeb"):
        control = debfile.DebFile(str(path)).debcontrol()
        name = str(control["Package"])
        if path.suffix == ".udeb":
            name += " udeb"
        if control.get("Architecture") == "all":
            return name, LintianPackageType.BINARY_ALL
        return name, LintianPackageType.BINARY_ANY
    if path.suffix == ".dsc":
        with path.open("rb") as stream:
            dsc = deb822.Dsc(stream)
        source = dsc.get("Source")
        if not source:
            raise ValueError(f"{path.name} has no Source field")
        return f"{source} source", LintianPackageType.SOURCE
    return None


def lintian_command(
    targets: list[str],
    *,
    include_tags: list[str],
    exclude_tags: list[str],
    target_distribution: str,
) -> list[str]:
    """lintian's command line, showing every tag with its explanation and overrides."""
    codename = target_distribution.rsplit(":", 1)[-1]
    # jessie's lintian knows no "classification" level.
    display_level = "pedantic" if codename == "jessie" else "classification"
    argv = [
        "lintian",
        "--no-cfg",
        "--display-level",
        f">={display_level}",
        "--display-experimental",
        "--info",
        "--show-overrides",
    ]
    if include_tags:
        argv.append("--tags=" + ",".join(include_tags))
    if exclude_tags:
        argv.append("--suppress-tags=" + ",".join(exclude_tags))
    return [*argv, *targets]


# --- The task ---------------------------------------------------------------------------------


class Lintian(
    ExecutorTask[LintianData, LintianDynamicData],
    name="lintian",
    version=1,
):
    """Check packages with lintian; one `debian:lintian` artifact per analysis."""

    #: Prepended to the commands run on the host (tests run them as another user).
    host_command_prefix: list[str] = []

    def __init__(self, task_data: Any, dynamic_task_data: Any = None) -> None:
        super().__init__(task_data, dynamic_task_data)
        self._targets: list[Path] = []
        self._download_directory: Path | None = None
        #: lintian's name of each package checked -> its file name.
        self._package_files: dict[str, str] = {}
        self._packages_by_type: dict[LintianPackageType, set[str]] = {
            package_type: set() for package_type in LintianPackageType
        }
        #: Architecture of the `Architecture: any` binaries checked (None: none).
        self._binary_architecture: str | None = None
        self._lintian_version = ""
        self._lintian_ran = False

    # --- Server side ---

    def compute_dynamic_data(self, resolver: LookupResolver) -> LintianDynamicData:
        source_id = None
        if self.data.input.source_artifact is not None:
            source_id = resolver.lookup_single(
                self.data.input.source_artifact, expect_type="artifact"
            ).artifact
        binary_ids: list[int] = []
        if self.data.input.binary_artifacts:
            for result in resolver.lookup_multiple(
                self.data.input.binary_artifacts, expect_type="artifact"
            ):
                if result.artifact is not None:
                    binary_ids.append(result.artifact)
        return LintianDynamicData(
            environment_id=self.resolve_environment(resolver),
            input_source_artifact_id=source_id,
            input_binary_artifacts_ids=binary_ids,
        )

    @classmethod
    def analyze_worker(cls) -> dict[str, Any]:
        # Not reported by Debusine workers: a task without an environment needs it (below).
        return {"lintian:available": cls.tool_available("lintian")}

    def can_run_on(self, worker_metadata: Any) -> bool:
        # Without an environment the worker's own lintian runs: no executor needed, but
        # lintian installed on the worker.
        if self.data.environment is None:
            return worker_metadata.get("lintian:available") is True
        return super().can_run_on(worker_metadata)

    # --- Worker side ---

    def _input_artifact_ids(self) -> list[int]:
        dynamic = self.computed
        ids = (
            [] if dynamic.input_source_artifact_id is None else [dynamic.input_source_artifact_id]
        )
        return ids + list(dynamic.input_binary_artifacts_ids)

    def fetch_input(self, destination: Path) -> bool:
        for artifact_id in self._input_artifact_ids():
            self.fetch_artifact(artifact_id, destination)
        return True

    def configure_for_execution(self, download_directory: Path) -> bool:
        """Find the .dsc, .deb and .udeb files to check and the packages they hold."""
        self._download_directory = download_directory
        files = sorted(p for p in download_directory.rglob("*") if p.is_file())
        sources = [p for p in files if p.suffix == ".dsc"]
        binaries = [p for p in files if p.suffix in (".deb", ".udeb")]
        log = self.open_debug_log_file("configure_for_execution.log")
        if not sources and not binaries:
            names = [str(p.relative_to(download_directory)) for p in files]
            log.write(f"No *.dsc, *.deb or *.udeb file to check. Files: {names}\n")
            return False
        for path in [*sources, *binaries]:
            try:
                found = package_of_file(path)
            except (ValueError, OSError, KeyError, debfile.DebError) as error:
                log.write(f"{path.name}: cannot read it: {error}\n")
                return False
            if found is None:
                continue
            name, package_type = found
            if package_type == LintianPackageType.BINARY_ANY:
                self._binary_architecture = str(
                    debfile.DebFile(str(path)).debcontrol()["Architecture"]
                )
            self._package_files[name] = path.name
            self._packages_by_type[package_type].add(name)
        self._targets = [*sources, *binaries]
        return True

    def _host_run(self, argv: list[str], stdout: IO[bytes] | int, log: IO[str]) -> int:
        command = [*self.host_command_prefix, *argv]
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        return subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=log, check=False
        ).returncode

    def run(self, execute_directory: Path) -> bool:
        assert self._download_directory is not None
        log = self.open_debug_log_file("lintian.log")
        output = execute_directory / LINTIAN_OUTPUT
        options: dict[str, Any] = {
            "include_tags": self.data.include_tags,
            "exclude_tags": self.data.exclude_tags,
            "target_distribution": self.data.target_distribution,
        }
        if self.data.environment is None:
            version = subprocess.run(
                [*self.host_command_prefix, "lintian", "--print-version"],
                capture_output=True,
                text=True,
                check=False,
            )
            self._lintian_version = version.stdout.strip()
            argv = lintian_command([str(p) for p in self._targets], **options)
            with output.open("wb") as stream:
                returncode = self._host_run(argv, stream, log)
        else:
            returncode = self._run_in_environment(output, options, log)
        log.write(f"lintian exit status: {returncode}\n")
        # 0: no tag of lintian's --fail-on level (error) found, 2: some; 1: lintian failed.
        self._lintian_ran = returncode in (0, 2)
        if not self._lintian_ran:
            return False
        with output.open(encoding="utf-8", errors="replace") as stream:
            tags = parse_lintian_output(stream)
        return not fails_on(tags, self.data.fail_on_severity)

    def _run_in_environment(self, output: Path, options: dict[str, Any], log: IO[str]) -> int:
        assert self._download_directory is not None
        executor = self.start_executor()
        for argv in (
            ["apt-get", "update"],
            ["apt-get", "--yes", "--no-install-recommends", "install", "lintian"],
        ):
            log.write(f"# in the environment: $ {shlex.join(argv)}\n")
            log.flush()
            result = self._executor_run(executor, argv, stdout=log)
            if result.returncode != 0:
                log.write(f"failed with exit status {result.returncode}\n")
                return 1
        version = self._executor_run(executor, ["lintian", "--print-version"], text=True)
        self._lintian_version = str(version.stdout).strip()
        executor.copy_in(self._download_directory, GUEST_INPUT)
        targets = [
            f"{GUEST_INPUT}/{p.relative_to(self._download_directory).as_posix()}"
            for p in self._targets
        ]
        argv = lintian_command(targets, **options)
        log.write(f"# in the environment: $ {shlex.join(argv)}\n")
        log.flush()
        with output.open("wb") as stream:
            result = self._executor_run(executor, argv, stdout=stream, stderr=log)
        return result.returncode

    @staticmethod
    def _executor_run(
        executor: UnshareExecutor,
        argv: list[str],
        *,
        stdout: IO[Any] | None = None,
        stderr: IO[Any] | None = None,
        text: bool = False,
    ) -> subprocess.CompletedProcess[Any]:
        return executor.run(
            argv,
            env={"DEBIAN_FRONTEND": "noninteractive"},
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=stderr if stderr is not None else subprocess.STDOUT,
            text=text,
        )

    def check_directory_for_consistency_errors(self, build_directory: Path) -> list[str]:
        if self._lintian_ran and not (build_directory / LINTIAN_OUTPUT).is_file():
            return [f"{LINTIAN_OUTPUT} was not written"]
        return []

    def analyses(self, execute_directory: Path) -> dict[LintianPackageType, dict[str, Any]]:
        """The analysis of each enabled package type, from lintian's output."""
        with (execute_directory / LINTIAN_OUTPUT).open(encoding="utf-8", errors="replace") as s:
            tags = parse_lintian_output(s)
        return {
            package_type: make_analysis(
                tags,
                self._packages_by_type[package_type],
                self._package_files,
                lintian_version=self._lintian_version,
                distribution=self.data.target_distribution,
            )
            for package_type in LintianPackageType
            if self.data.output.enabled(package_type)
        }

    def output_artifacts(self, execute_directory: Path) -> list[LocalArtifact]:
        """The `debian:lintian` artifacts to upload (analysis files written next to the output)."""
        artifacts = []
        for package_type, analysis in self.analyses(execute_directory).items():
            analysis_file = execute_directory / f"analysis-{package_type}.json"
            analysis_file.write_text(json.dumps(analysis, indent=2) + "\n", encoding="utf-8")
            artifacts.append(
                lintian_artifact(
                    {
                        LINTIAN_OUTPUT: execute_directory / LINTIAN_OUTPUT,
                        "analysis.json": analysis_file,
                    },
                    DebianLintianSummary.model_validate(analysis["summary"]),
                    architecture=self._analysis_architecture(package_type),
                )
            )
        return artifacts

    def _analysis_architecture(self, package_type: LintianPackageType) -> str:
        if package_type == LintianPackageType.SOURCE:
            return "source"
        if package_type == LintianPackageType.BINARY_ALL:
            return "all"
        return self._binary_architecture or self.host_architecture()

    def upload_artifacts(self, directory: Path, *, execution_success: bool) -> None:
        if not self._lintian_ran:
            return
        relations = [(artifact_id, "relates-to") for artifact_id in self._input_artifact_ids()]
        for artifact in self.output_artifacts(directory):
            self.upload_artifact(artifact, relations=relations)
