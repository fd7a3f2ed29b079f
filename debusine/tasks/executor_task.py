"""
`ExecutorTask`: the base of the Debian tasks that run in an environment (sbuild, autopkgtest...).

An environment is a `debian:system-tarball` artifact, usually found through a lookup in a
`debian:environments` collection (task data `environment`, e.g.
`debian/match:codename=bookworm`). On the server, `compute_dynamic_data` resolves it into
`dynamic_task_data.environment_id`, completing the lookup the way Debusine does: the task's
host architecture, the image format and the backend are added as filters, and an environment
made for this task (`variant=<task name>`) is preferred to a generic one (`variant=`).

On the worker the class gives the stages helpers to download input artifacts, get the
environment from the worker's cache, run logged commands, and upload output artifacts (with
their relations) as the work request's results. No Django here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from debusine.client.client import LocalFile
from debusine.tasks.base import BaseTask, Lookup, LookupFailedError, LookupResolver, TaskError
from debusine.tasks.executors.cache import CachedEnvironment, EnvironmentCache
from debusine.tasks.executors.unshare import UnshareExecutor
from debusine.tasks.models import (
    BackendType,
    BaseDynamicTaskData,
    BaseDynamicTaskDataWithExecutor,
    BaseTaskDataWithExecutor,
    TaskType,
)

if TYPE_CHECKING:
    from debusine.artifacts.local import LocalArtifact
    from debusine.client.client import DebusineClient
    from debusine.protocol.artifacts import LenientArtifactResponse as Artifact

D = TypeVar("D", bound=BaseTaskDataWithExecutor)
DD = TypeVar("DD", bound=BaseDynamicTaskDataWithExecutor)

#: Default category of the first segment of an environment lookup.
ENVIRONMENTS_CATEGORY = "debian:environments"
#: The backend `auto` stands for.
DEFAULT_BACKEND = BackendType.UNSHARE
#: Image format each backend runs (the `format` filter of the environment lookup).
BACKEND_FORMATS = {
    BackendType.UNSHARE: "tarball",
    BackendType.INCUS_LXC: "tarball",
    BackendType.INCUS_VM: "image",
    BackendType.QEMU: "image",
}
#: Seconds `run_logged` waits after SIGTERM before SIGKILL, when a command times out.
KILL_GRACE = 10


def complete_environment_lookup(
    lookup: Lookup, *, architecture: str | None, backend: BackendType, variant: str | None
) -> Lookup:
    """
    `lookup` with the filters Debusine adds to environment lookups, unless already present:
    `architecture`, `format` and `backend`, plus `variant` when it is not None.

    Only a string lookup of two segments whose second is `match:...` (`debian/match:...`) and
    a dictionary lookup (as `lookup__<key>` filters, which the `debian:environments` collection
    interprets as its `match:` filters; a key given as `lookup__<key>` or `data__<key>...` is
    left alone) are completed; anything else (an ID, a lookup by name) designates one
    environment already and is returned as is.
    """
    filters: dict[str, str] = {}
    if architecture is not None:
        filters["architecture"] = architecture
    filters["format"] = BACKEND_FORMATS[backend]
    filters["backend"] = backend.value
    if variant is not None:
        filters["variant"] = variant
    if isinstance(lookup, str):
        segments = lookup.split("/")
        if len(segments) != 2 or not (segments[1] == "match" or segments[1].startswith("match:")):
            return lookup
        existing: dict[str, str] = {}
        parts = segments[1].split(":")[1:]
        for part in parts:
            key, _, value = part.partition("=")
            existing[key] = value
        added = [f"{key}={value}" for key, value in filters.items() if key not in existing]
        return f"{segments[0]}/{':'.join(['match', *parts, *added])}"
    if isinstance(lookup, dict):
        completed = dict(lookup)
        for key, value in filters.items():
            if not _dict_names(lookup, key):
                completed[f"lookup__{key}"] = value
        return completed
    return lookup


class ExecutorTask(BaseTask[D], Generic[D, DD], abstract=True):
    """
    A Worker task that runs in an environment (`task_data.environment`).

    A subclass is declared in one class statement: its data models as type arguments, its
    name, version and the programs it needs on the worker as keywords::

        class Sbuild(
            ExecutorTask[SbuildData, SbuildDynamicData],
            name="sbuild",
            version=1,
            tools=("sbuild",),
        ):

    Its `compute_dynamic_data` calls `resolve_environment(resolver)` for `environment_id`. A
    subclass that overrides `cleanup` calls `super().cleanup()`: it stops the executors
    `start_executor` started.
    """

    TASK_TYPE = TaskType.WORKER
    TASK_DYNAMIC_DATA_MODEL: ClassVar[type[BaseDynamicTaskData]] = BaseDynamicTaskDataWithExecutor
    #: Programs the task needs on the worker: each is reported as `<program>:available`
    #: metadata (`analyze_worker`), which must be true for the worker to run the task.
    REQUIRED_TOOLS: ClassVar[tuple[str, ...]] = ()
    #: The metadata keys of REQUIRED_TOOLS (e.g. `("sbuild:available",)`).
    REQUIRED_TOOLS_METADATA: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, tools: tuple[str, ...] | None = None, **kwargs: Any) -> None:
        if tools is not None:
            cls.REQUIRED_TOOLS = tools
            cls.REQUIRED_TOOLS_METADATA = tuple(f"{tool}:available" for tool in tools)
        super().__init_subclass__(**kwargs)

    @property
    def computed(self) -> DD:
        """The dynamic data the server computed, as the task's model; TaskError if none."""
        return cast(DD, self.computed_dynamic_data(self.TASK_DYNAMIC_DATA_MODEL))

    # --- Environment lookup (server side) -------------------------------------------------------

    @property
    def backend(self) -> BackendType:
        """The backend the task runs with: `auto` means unshare."""
        backend = BackendType(self.data.backend)
        return DEFAULT_BACKEND if backend == BackendType.AUTO else backend

    def host_architecture(self) -> str:
        """The task data's `host_architecture`, else this machine's architecture."""
        architecture = getattr(self.data, "host_architecture", None)
        if isinstance(architecture, str) and architecture:
            return architecture
        return _machine_architecture()

    def environment_lookup_variants(self) -> list[Lookup]:
        """
        The lookups to try, in order, for the task's environment: the completed lookup for an
        environment made for this task (`variant=<task name>`), then for a generic one
        (`variant=`). A lookup that names its variant, or one that is not completed (an ID...),
        is tried alone; no environment gives no lookup.
        """
        lookup = self.data.environment
        if lookup is None:
            return []
        architecture = self.host_architecture()
        base = complete_environment_lookup(
            lookup, architecture=architecture, backend=self.backend, variant=None
        )
        if base == lookup and not _is_completable(lookup):
            return [lookup]
        if _names_variant(lookup):
            return [base]
        variants: list[Lookup] = []
        for variant in (self.TASK_NAME, ""):
            completed = complete_environment_lookup(
                lookup, architecture=architecture, backend=self.backend, variant=variant
            )
            if completed not in variants:
                variants.append(completed)
        return variants

    def resolve_environment(self, resolver: LookupResolver) -> int | None:
        """
        The ID of the environment artifact: the first of `environment_lookup_variants()` that
        resolves. None if the task has no environment; LookupFailedError if none resolves.
        """
        variants = self.environment_lookup_variants()
        if not variants:
            return None
        failures: list[str] = []
        for lookup in variants:
            try:
                result = resolver.lookup_single(
                    lookup, expect_type="artifact", default_category=ENVIRONMENTS_CATEGORY
                )
            except LookupFailedError as error:
                failures.append(str(error))
                continue
            if result.artifact is None:
                failures.append(f"{lookup!r} is not an artifact")
                continue
            return result.artifact
        tried = "; ".join(failures)
        raise LookupFailedError(
            f"no environment matches {self.data.environment!r} for architecture "
            f"{self.host_architecture()} and backend {self.backend}: {tried}"
        )

    def compute_dynamic_data(self, resolver: LookupResolver) -> BaseDynamicTaskData | None:
        """The default: only the environment (subclasses resolve their inputs too)."""
        return BaseDynamicTaskDataWithExecutor(environment_id=self.resolve_environment(resolver))

    @classmethod
    def analyze_worker(cls) -> dict[str, Any]:
        """Whether each of REQUIRED_TOOLS is installed: `<program>:available`."""
        return {f"{tool}:available": cls.tool_available(tool) for tool in cls.REQUIRED_TOOLS}

    def can_run_on(self, worker_metadata: Mapping[str, Any]) -> bool:
        """The worker has the backend (`executor:<backend>:available`) and the tools."""
        if worker_metadata.get(f"executor:{self.backend.value}:available") is not True:
            return False
        return all(worker_metadata.get(key) is True for key in self.REQUIRED_TOOLS_METADATA)

    @staticmethod
    def tool_available(name: str) -> bool:
        """Whether the program `name` is on this worker's PATH (for `analyze_worker`)."""
        return shutil.which(name) is not None

    # --- Helpers for the stages (worker side) ---------------------------------------------------

    @functools.cached_property
    def client(self) -> DebusineClient:
        """A client of the server, as the worker (only while the task executes)."""
        return self.context.client()

    @property
    def environment_id(self) -> int:
        environment_id = getattr(self.dynamic_data, "environment_id", None)
        if not isinstance(environment_id, int):
            raise TaskError("the server did not resolve the environment (no environment_id)")
        return environment_id

    def fetch_artifact(self, artifact_id: int, destination: Path) -> Artifact:
        """
        Download every file of artifact `artifact_id` to `destination/<its path>` (sizes and
        SHA-256 checked); return the artifact (`.category`, `.data`, `.files`).
        """
        artifact = self.client.artifact_get(artifact_id)
        destination.mkdir(parents=True, exist_ok=True)
        for name, file in sorted(artifact.files.items()):
            path = PurePosixPath(name)
            if path.is_absolute() or ".." in path.parts or not path.parts:
                raise TaskError(f"artifact {artifact_id} has an unsafe file path {name!r}")
            target = destination.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(name, file, target)
        return artifact

    def environment_cache(self) -> EnvironmentCache:
        """The worker's environment cache (`<cache-dir>/environments`), else a private one."""
        if self.context.cache_directory is not None:
            return EnvironmentCache(self.context.cache_directory / "environments")
        return EnvironmentCache(self.context.directory / "environment-cache")

    def get_environment(self) -> CachedEnvironment:
        """The environment of `dynamic_data.environment_id`, from the cache (downloaded once)."""
        environment = self.environment_cache().get(self.environment_id, self.client)
        self._held_environments().append(environment)
        return environment

    def start_executor(self) -> UnshareExecutor:
        """
        An UnshareExecutor of the task's environment, started in the run's directory; it is
        stopped by `cleanup()`.
        """
        if self.backend != BackendType.UNSHARE:
            raise TaskError(f"backend {self.backend} is not supported by this worker")
        executor = UnshareExecutor(self.get_environment(), self.context.directory / "executor")
        executor.start()
        self._executors().append(executor)
        return executor

    def upload_artifact(
        self, local: LocalArtifact, *, relations: Sequence[tuple[int, str]] = ()
    ) -> int:
        """
        Create `local` as an output of the work request (in its workspace), upload its files,
        then relate it to each (target artifact ID, relation type); return its ID.
        """
        files = {
            name: LocalFile.from_path(path, local.content_types.get(name))
            for name, path in local.files.items()
        }
        artifact = self.client.artifact_create(
            str(local.category),
            files,
            local.data_json(),
            workspace=self.context.workspace,
            work_request=self.context.work_request_id,
        )
        self.client.upload_artifact_files(artifact, files)
        for target_id, relation_type in relations:
            self.relate(artifact.id, target_id, relation_type)
        return artifact.id

    def relate(self, artifact_id: int, target_id: int, relation_type: str) -> None:
        """Create the relation `artifact_id` --relation_type--> `target_id`."""
        self.client.relation_create(artifact_id, target_id, relation_type)

    def run_logged(
        self,
        argv: list[str],
        log_name: str,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> int:
        """
        Run `argv` on the worker (environment: the worker's plus `env`), appending `$ argv`,
        its output (stdout and stderr) and its exit status to the debug log `log_name`; return
        the exit status (negative: killed by that signal, e.g. after `timeout` seconds).
        """
        log = self.open_debug_log_file(log_name)
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # In the task's own process group (no new session): when the work request is
                # aborted or the worker stops, the signal to that group reaches the tool too,
                # and whatever the tool leaves behind dies with the group.
            )
        except OSError as error:
            log.write(f"cannot run {argv[0]}: {error}\n")
            return 127
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.write(f"timed out after {timeout} s: stopping it\n")
            returncode = _stop_process(process)
        log.write(f"exit status {returncode} ({time.monotonic() - started:.1f} s)\n")
        log.flush()
        return returncode

    def cleanup(self) -> None:
        """Stop the executors `start_executor` started and release the environments."""
        errors: list[str] = []
        for executor in reversed(self._executors()):
            try:
                executor.stop()
            except Exception as error:
                errors.append(str(error))
        self._executors().clear()
        for environment in self._held_environments():
            environment.release()
        self._held_environments().clear()
        if errors:
            raise TaskError("; ".join(errors))

    def _executors(self) -> list[UnshareExecutor]:
        if "_started_executors" not in self.__dict__:
            self._started_executors: list[UnshareExecutor] = []
        return self._started_executors

    def _held_environments(self) -> list[CachedEnvironment]:
        if "_environments" not in self.__dict__:
            self._environments: list[CachedEnvironment] = []
        return self._environments


def _is_completable(lookup: Lookup) -> bool:
    if isinstance(lookup, dict):
        return True
    if isinstance(lookup, str):
        segments = lookup.split("/")
        return len(segments) == 2 and (segments[1] == "match" or segments[1].startswith("match:"))
    return False


def _dict_names(lookup: dict[str, Any], key: str) -> bool:
    """Whether a dictionary lookup constrains `key` already (as a filter or a data matcher)."""
    data = f"data__{key}"
    return any(name in (f"lookup__{key}", data) or name.startswith(f"{data}__") for name in lookup)


def _names_variant(lookup: Lookup) -> bool:
    if isinstance(lookup, dict):
        return _dict_names(lookup, "variant")
    if isinstance(lookup, str):
        return any(part.partition("=")[0] == "variant" for part in lookup.split(":")[1:])
    return False


@functools.cache
def _machine_architecture() -> str:
    """`dpkg --print-architecture` of this machine."""
    try:
        result = subprocess.run(
            ["dpkg", "--print-architecture"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise TaskError(f"cannot find this machine's architecture: {error}") from None
    return result.stdout.strip()


def _stop_process(process: subprocess.Popen[Any]) -> int:
    """
    SIGTERM the process, SIGKILL it after KILL_GRACE seconds; its exit status. (Tools clean up
    their own children on SIGTERM; what they leave is killed with the task's process group.)
    """
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        try:
            return process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()
