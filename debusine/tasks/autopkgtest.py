"""
The `autopkgtest` task: run a source package's tests (debian/tests) against its binaries.

autopkgtest runs on the worker (it must be installed there: `autopkgtest:available`) and
tests in the environment through `autopkgtest-virt-unshare`, which unpacks the environment's
tarball in a user namespace; nothing needs root. The output directory (logs, per-test
stdout/stderr, `summary`) becomes a `debian:autopkgtest` artifact whose data gives each test's
status (PASS, FAIL, FLAKY, SKIP); `fail_on` says which statuses fail the task.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, cast

from annotated_types import MaxLen
from debian import deb822
from pydantic import BaseModel, ConfigDict, Field

from debusine.artifacts.local import LocalArtifact, autopkgtest_artifact
from debusine.artifacts.models import (
    DebianAutopkgtest,
    DebianAutopkgtestResult,
    DebianAutopkgtestSource,
)
from debusine.tasks.base import LookupFailedError, LookupResolver, TaskError
from debusine.tasks.executor_task import ExecutorTask
from debusine.tasks.models import (
    MAX_ITEMS,
    MAX_TIMEOUT_FACTOR,
    BaseDynamicTaskDataWithExecutor,
    BaseTaskDataWithExecutor,
    DatabaseId,
    ExtraRepositories,
    LookupAny,
    LookupMultiple,
    LookupSingle,
    Name,
    Names,
    ResolvedIds,
    Seconds,
    Text,
)

#: autopkgtest's output directory and summary file, relative to the execute directory.
ARTIFACT_DIR = "artifact-dir"
SUMMARY_FILE = f"{ARTIFACT_DIR}/summary"
STATUSES = ("PASS", "FAIL", "FLAKY", "SKIP")

_RESULT_LINE = re.compile(r"(?P<name>\S+)\s+(?P<status>\S+)(?:\s+(?P<details>.*))?")
#: Lines about the whole run, e.g. "blame: ..." or "badpkg: ..." (lowercase words, colon).
_ERROR_LINE = re.compile(r"(?P<error>[a-z ]+): (?P<details>.*)")


class AutopkgtestNeedsInternet(StrEnum):
    """Values of `needs_internet` (autopkgtest `--needs-internet`)."""

    RUN = "run"
    TRY = "try"
    SKIP = "skip"


class AutopkgtestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_artifact: LookupSingle
    binary_artifacts: LookupMultiple
    #: Other binaries the tests may use (e.g. of reverse dependencies).
    context_artifacts: LookupMultiple = Field(default_factory=list)


class AutopkgtestFailOn(BaseModel):
    """Which test results fail the task."""

    model_config = ConfigDict(extra="forbid")

    failed_test: bool = True
    flaky_test: bool = False
    skipped_test: bool = False


class AutopkgtestTimeout(BaseModel):
    """autopkgtest's `--timeout-<name>` values, in seconds."""

    # Stored and sent under the wire names ("global", "copy"), whoever dumps the model.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    global_: Seconds | None = Field(default=None, alias="global")
    #: A multiplier of every timeout.
    factor: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT_FACTOR)
    short: Seconds | None = None
    install: Seconds | None = None
    test: Seconds | None = None
    copy_: Seconds | None = Field(default=None, alias="copy")


class AutopkgtestData(BaseTaskDataWithExecutor):
    """Data of the `autopkgtest` task."""

    input: AutopkgtestInput
    host_architecture: Name
    #: Required here (optional in the base).
    environment: LookupAny
    include_tests: Names = Field(default_factory=list)
    exclude_tests: Names = Field(default_factory=list)
    debug_level: int = Field(default=0, ge=0, le=3)
    #: Prefer the environment's own suite to the extra repositories (`--apt-default-release`).
    use_packages_from_base_repository: bool = False
    extra_environment: Annotated[dict[Name, Text], MaxLen(MAX_ITEMS)] = Field(default_factory=dict)
    needs_internet: AutopkgtestNeedsInternet = AutopkgtestNeedsInternet.RUN
    fail_on: AutopkgtestFailOn = Field(default_factory=AutopkgtestFailOn)
    timeout: AutopkgtestTimeout | None = None
    extra_repositories: ExtraRepositories | None = None


class AutopkgtestDynamicData(BaseDynamicTaskDataWithExecutor):
    """Dynamic data of the `autopkgtest` task."""

    input_source_artifact_id: DatabaseId
    input_binary_artifacts_ids: ResolvedIds = Field(default_factory=list)
    input_context_artifacts_ids: ResolvedIds = Field(default_factory=list)


def parse_summary(text: str) -> dict[str, DebianAutopkgtestResult]:
    """
    The per-test results of an autopkgtest summary file (`name STATUS [details]` lines).
    Lines about the whole run ("blame: ...", "badpkg: ...") are skipped: a run that failed
    before any test has no results. ValueError for a line that cannot be parsed.
    """
    results: dict[str, DebianAutopkgtestResult] = {}
    for line in text.splitlines():
        line = line.rstrip()
        if not line or _ERROR_LINE.fullmatch(line):
            continue
        match = _RESULT_LINE.fullmatch(line)
        if match is None or match["status"] not in STATUSES:
            raise ValueError(f"cannot parse autopkgtest summary line: {line!r}")
        results[match["name"]] = DebianAutopkgtestResult(
            status=cast(Any, match["status"]), details=match["details"] or None
        )
    return results


def task_succeeded(
    results: dict[str, DebianAutopkgtestResult], returncode: int, fail_on: AutopkgtestFailOn
) -> bool:
    """
    Whether the run succeeded, by `fail_on`. autopkgtest's exit status is a set of flags: 2
    some test was skipped (or a flaky test failed), 4 some test failed, 8 no test ran; 12 and
    up mean the run itself went wrong (an erroneous package, a broken testbed), never a success.
    """
    if returncode not in (0, 2, 4, 6, 8):
        return False
    for result in results.values():
        if (
            (result.status == "FAIL" and fail_on.failed_test)
            or (result.status == "FLAKY" and fail_on.flaky_test)
            or (result.status == "SKIP" and fail_on.skipped_test)
        ):
            return False
    if returncode & 4 and fail_on.failed_test:
        return False
    return not (returncode == 8 and fail_on.skipped_test)


class Autopkgtest(
    ExecutorTask[AutopkgtestData, AutopkgtestDynamicData],
    name="autopkgtest",
    version=1,
    tools=("autopkgtest",),
):
    """Run autopkgtest; upload its output as a `debian:autopkgtest` artifact."""

    #: Prepended to the autopkgtest command (tests run it as another user).
    host_command_prefix: list[str] = []

    def __init__(self, task_data: Any, dynamic_task_data: Any = None) -> None:
        super().__init__(task_data, dynamic_task_data)
        self._dsc: Path | None = None
        self._dsc_url = ""
        self._source_name = ""
        self._source_version = ""
        self._binaries: list[Path] = []
        self._tarball: Path | None = None
        self._distribution = ""
        self._codename = ""
        self._extra_files: list[Path] = []
        self._results: dict[str, DebianAutopkgtestResult] | None = None
        self._command: list[str] = []

    def compute_dynamic_data(self, resolver: LookupResolver) -> AutopkgtestDynamicData:
        def ids(lookup: Any) -> list[int]:
            if not lookup:
                return []
            results = resolver.lookup_multiple(lookup, expect_type="artifact")
            return [r.artifact for r in results if r.artifact is not None]

        source = resolver.lookup_single(self.data.input.source_artifact, expect_type="artifact")
        environment_id = self.resolve_environment(resolver)
        if source.artifact is None or environment_id is None:
            raise LookupFailedError(
                f"input.source_artifact {self.data.input.source_artifact!r} is not an artifact"
            )
        return AutopkgtestDynamicData(
            environment_id=environment_id,
            input_source_artifact_id=source.artifact,
            input_binary_artifacts_ids=ids(self.data.input.binary_artifacts),
            input_context_artifacts_ids=ids(self.data.input.context_artifacts),
            runtime_context=f"{self.host_architecture()}:{self.backend}",
        )

    # --- Worker side ---

    def fetch_input(self, destination: Path) -> bool:
        dynamic = self.computed
        source = self.fetch_artifact(dynamic.input_source_artifact_id, destination)
        for name, file in source.files.items():
            if name.endswith(".dsc"):
                self._dsc_url = file.url
        for artifact_id in [
            *dynamic.input_binary_artifacts_ids,
            *dynamic.input_context_artifacts_ids,
        ]:
            self.fetch_artifact(artifact_id, destination)
        environment = self.get_environment()
        self.use_environment(environment.tarball, environment.data)
        return True

    def use_environment(self, tarball: Path, data: dict[str, Any]) -> None:
        """Test in the system tarball `tarball` (with its artifact's `data`)."""
        self._tarball = tarball
        self._distribution = f"{data.get('vendor', 'debian')}:{data.get('codename', '')}"
        self._codename = str(data.get("codename", ""))

    def configure_for_execution(self, download_directory: Path) -> bool:
        log = self.open_debug_log_file("configure_for_execution.log")
        dscs = sorted(download_directory.rglob("*.dsc"))
        if len(dscs) != 1:
            log.write(f"expected one .dsc file in the input, found {len(dscs)}\n")
            return False
        self._dsc = dscs[0]
        with self._dsc.open("rb") as stream:
            dsc = deb822.Dsc(stream)
        if not dsc.get("Source") or not dsc.get("Version"):
            log.write(f"{self._dsc.name} is not a valid .dsc file\n")
            return False
        self._source_name, self._source_version = str(dsc["Source"]), str(dsc["Version"])
        self._binaries = sorted(download_directory.rglob("*.deb"))
        self._extra_files = self._write_extra_repositories(download_directory)
        return True

    def _write_extra_repositories(self, directory: Path) -> list[Path]:
        files = []
        for index, repository in enumerate(self.data.extra_repositories or []):
            path = directory / f"extra-repository-{index}.sources"
            path.write_text(repository.as_deb822(), encoding="utf-8")
            files.append(path)
        return files

    def command(self) -> list[str]:
        """autopkgtest's command line (run in the execute directory)."""
        if self._dsc is None or self._tarball is None:
            raise TaskError("configure_for_execution and the environment come first")
        argv = [
            "autopkgtest",
            "--apt-upgrade",
            f"--output-dir={ARTIFACT_DIR}",
            f"--summary={SUMMARY_FILE}",
            "--no-built-binaries",
        ]
        argv += [f"--test-name={name}" for name in self.data.include_tests]
        argv += [f"--skip-test={name}" for name in self.data.exclude_tests]
        if self.data.debug_level:
            argv.append("-" + "d" * self.data.debug_level)
        for path in self._extra_files:
            argv.append(f"--copy={path}:/etc/apt/sources.list.d/{path.name}")
        if self.data.use_packages_from_base_repository and self._codename:
            argv.append(f"--apt-default-release={self._codename}")
        argv += [f"--env={name}={value}" for name, value in self.data.extra_environment.items()]
        argv.append(f"--needs-internet={self.data.needs_internet}")
        if self.data.timeout is not None:
            for name, seconds in self.data.timeout.model_dump(by_alias=True).items():
                if seconds is not None:
                    argv.append(f"--timeout-{name}={seconds}")
        if Path("/etc/resolv.conf").is_file():
            # The tarball's resolver configuration may not work here: use the host's.
            argv.append("--copy=/etc/resolv.conf:/etc/resolv.conf")
        # The environment's package lists are not in the tarball.
        argv.append("--setup-commands=apt-get update")
        argv += [str(path) for path in self._binaries]
        argv.append(str(self._dsc))
        argv += [
            "--",
            "unshare",
            "--tarball",
            str(self._tarball),
            "--arch",
            self.data.host_architecture,
        ]
        return argv

    def run(self, execute_directory: Path) -> bool:
        self._command = self.command()
        log = self.open_debug_log_file("autopkgtest.log")
        full = [*self.host_command_prefix, *self._command]
        log.write(f"$ {shlex.join(full)}\n")
        log.flush()
        returncode = subprocess.run(
            full,
            cwd=execute_directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
        log.write(f"autopkgtest exit status: {returncode}\n")
        summary = execute_directory / SUMMARY_FILE
        if not summary.is_file():
            return False
        self._results = parse_summary(summary.read_text(encoding="utf-8", errors="replace"))
        return task_succeeded(self._results, returncode, self.data.fail_on)

    def check_directory_for_consistency_errors(self, build_directory: Path) -> list[str]:
        if not (build_directory / SUMMARY_FILE).is_file():
            return [f"{SUMMARY_FILE} was not written"]
        return []

    def output_artifact(self, execute_directory: Path) -> LocalArtifact:
        """The `debian:autopkgtest` artifact: every file of autopkgtest's output directory."""
        directory = execute_directory / ARTIFACT_DIR
        files = {
            path.relative_to(directory).as_posix(): path
            for path in sorted(directory.rglob("*"))
            if path.is_file() and not path.is_symlink()
        }
        data = DebianAutopkgtest(
            results=self._results or {},
            cmdline=shlex.join(self._command),
            source_package=DebianAutopkgtestSource(
                name=self._source_name, version=self._source_version, url=self._dsc_url
            ),
            architecture=self.data.host_architecture,
            distribution=self._distribution,
        )
        return autopkgtest_artifact(files, data)

    def upload_artifacts(self, directory: Path, *, execution_success: bool) -> None:
        if self._results is None:
            return
        dynamic = self.computed
        relations = [
            (artifact_id, "relates-to")
            for artifact_id in [
                dynamic.input_source_artifact_id,
                *dynamic.input_binary_artifacts_ids,
            ]
        ]
        self.upload_artifact(self.output_artifact(directory), relations=relations)
