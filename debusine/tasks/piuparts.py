"""
The `piuparts` task: test that binary packages install, upgrade and purge cleanly.

piuparts tests in a chroot made from `base_tgz` (a `debian:system-tarball`, usually found in
`debian:environments`). It needs root: the task runs the worker's piuparts (`piuparts:available`)
as root of a user namespace (`unshare --map-auto --map-root-user --mount --pid --fork`), so the
worker user needs subordinate ID ranges, like the unshare executor. Two adaptations make that
work with piuparts 1.1:

- the base tarball is rewritten as a gzip tarball (piuparts 1.1 reads no other compression)
  without the device nodes under /dev, which cannot be created in a user namespace;
- piuparts creates /dev/null and /dev/ptmx with mknod, which is refused there too: wrappers of
  `mount`/`umount` first in its PATH bind the host's /dev into the chroot when piuparts mounts
  the chroot's /proc (its first mount), and unbind it when it unmounts /proc (its last).

Debusine instead installs piuparts inside `environment` and runs it there; here `environment`
is still required and resolved (for compatibility with Debusine's task data) but piuparts runs
from the worker. The output is piuparts' log, kept as the `piuparts.log` debug log (Debusine
uploads no other artifact); the task succeeds if and only if piuparts does.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from debusine.tasks.base import LookupFailedError, LookupResolver, TaskError
from debusine.tasks.executor_task import (
    ENVIRONMENTS_CATEGORY,
    ExecutorTask,
    complete_environment_lookup,
)
from debusine.tasks.executors.unshare import user_namespace_arguments
from debusine.tasks.models import (
    BackendType,
    BaseDynamicTaskDataWithExecutor,
    BaseTaskDataWithExecutor,
    DatabaseId,
    ExtraRepositories,
    LookupAny,
    LookupMultiple,
    LookupSingle,
    Name,
    ResolvedIds,
)

PIUPARTS_LOG = "piuparts.log"

#: `mount` wrapper: bind the host's /dev into the chroot when piuparts mounts its /proc.
MOUNT_WRAPPER = """\
#!/bin/sh
for target; do :; done
if [ "$1" = "-t" ] && [ "$2" = "proc" ]; then
    case "$target" in
    */proc) /usr/bin/mount --rbind /dev "${target%/proc}/dev" || exit 1 ;;
    esac
fi
exec /usr/bin/mount "$@"
"""

#: `umount` wrapper: unbind the chroot's /dev before piuparts unmounts its /proc (its last).
UMOUNT_WRAPPER = """\
#!/bin/sh
for target; do :; done
case "$target" in
*/proc) /usr/bin/umount --lazy "${target%/proc}/dev" 2>/dev/null ;;
esac
exec /usr/bin/umount "$@"
"""

_DECOMPRESSORS = {
    b"\x28\xb5\x2f\xfd": ["zstd", "-dc"],
    b"\xfd7zXZ": ["xz", "-dc"],
    b"\x1f\x8b": ["gzip", "-dc"],
    b"BZh": ["bzip2", "-dc"],
}


class PiupartsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    binary_artifacts: LookupMultiple


class PiupartsData(BaseTaskDataWithExecutor):
    """Data of the `piuparts` task."""

    input: PiupartsInput
    host_architecture: Name
    #: Lookup of the system tarball piuparts makes its test chroot from.
    base_tgz: LookupSingle
    #: Required here (optional in the base).
    environment: LookupAny
    extra_repositories: ExtraRepositories | None = None


class PiupartsDynamicData(BaseDynamicTaskDataWithExecutor):
    """Dynamic data of the `piuparts` task."""

    input_binary_artifacts_ids: ResolvedIds = Field(default_factory=list)
    base_tgz_id: DatabaseId


def decompressor_for(path: Path) -> list[str]:
    """The command writing the uncompressed tar of `path` to its output."""
    with path.open("rb") as stream:
        magic = stream.read(6)
    for prefix, command in _DECOMPRESSORS.items():
        if magic.startswith(prefix):
            return [*command, "--", str(path)]
    return ["cat", "--", str(path)]


def make_base_tgz(tarball: Path, destination: Path) -> None:
    """Write `tarball` (any compression) to `destination` as gzip, without /dev/* entries."""
    with destination.open("wb") as output:
        decompress = subprocess.Popen(
            decompressor_for(tarball), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert decompress.stdout is not None
        tar_filter = subprocess.Popen(
            ["mmtarfilter", "--path-exclude=/dev/*"],
            stdin=decompress.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        decompress.stdout.close()
        assert tar_filter.stdout is not None
        compress = subprocess.Popen(
            ["gzip", "-1"], stdin=tar_filter.stdout, stdout=output, stderr=subprocess.PIPE
        )
        tar_filter.stdout.close()
        compress_error = compress.communicate()[1]
        filter_error = tar_filter.communicate()[1]
        decompress_error = decompress.communicate()[1]
    failed = [
        (name, process.returncode, error)
        for name, process, error in (
            ("decompression", decompress, decompress_error),
            ("mmtarfilter", tar_filter, filter_error),
            ("gzip", compress, compress_error),
        )
        if process.returncode != 0
    ]
    if failed:
        name, returncode, error = failed[0]
        raise TaskError(
            f"cannot convert {tarball.name} for piuparts: {name} exited with {returncode}: "
            f"{error.decode(errors='replace').strip()[-500:]}"
        )


class Piuparts(
    ExecutorTask[PiupartsData, PiupartsDynamicData],
    name="piuparts",
    version=1,
    # Debusine's workers do not report piuparts:available (they install piuparts in the
    # environment).
    tools=("piuparts",),
):
    """Test binary packages with piuparts."""

    #: Prepended to the piuparts command (tests run it as another user).
    host_command_prefix: list[str] = []

    def __init__(self, task_data: Any, dynamic_task_data: Any = None) -> None:
        super().__init__(task_data, dynamic_task_data)
        self._debs: list[Path] = []
        self._base_tarball: Path | None = None
        self._base_tgz: Path | None = None
        self._tools: Path | None = None
        self._scripts: Path | None = None

    def compute_dynamic_data(self, resolver: LookupResolver) -> PiupartsDynamicData:
        binaries = resolver.lookup_multiple(
            self.data.input.binary_artifacts, expect_type="artifact"
        )
        # base_tgz is completed like an environment lookup (architecture, tarball format).
        base_tgz_lookup = complete_environment_lookup(
            self.data.base_tgz,
            architecture=self.host_architecture(),
            backend=BackendType.UNSHARE,
            variant=None,
        )
        base_tgz = resolver.lookup_single(
            base_tgz_lookup, expect_type="artifact", default_category=ENVIRONMENTS_CATEGORY
        )
        if base_tgz.artifact is None:
            raise LookupFailedError(f"base_tgz {self.data.base_tgz!r} is not an artifact")
        return PiupartsDynamicData(
            environment_id=self.resolve_environment(resolver),
            input_binary_artifacts_ids=[r.artifact for r in binaries if r.artifact is not None],
            base_tgz_id=base_tgz.artifact,
            runtime_context=self.host_architecture(),
        )

    # --- Worker side ---

    def fetch_input(self, destination: Path) -> bool:
        dynamic = self.computed
        for artifact_id in dynamic.input_binary_artifacts_ids:
            self.fetch_artifact(artifact_id, destination)
        base = self.environment_cache().get(dynamic.base_tgz_id, self.client)
        self._held_environments().append(base)
        self.use_base_tarball(base.tarball)
        return True

    def use_base_tarball(self, tarball: Path) -> None:
        """Make piuparts' chroot from the system tarball `tarball`."""
        self._base_tarball = tarball

    def configure_for_execution(self, download_directory: Path) -> bool:
        log = self.open_debug_log_file("configure_for_execution.log")
        self._debs = sorted(download_directory.rglob("*.deb"))
        if not self._debs:
            files = sorted(p.name for p in download_directory.rglob("*") if p.is_file())
            log.write(f"There must be at least one *.deb file. Files: {files}\n")
            return False
        if self._base_tarball is None:
            raise TaskError("no base tarball")
        self._base_tgz = download_directory / "base.tgz"
        make_base_tgz(self._base_tarball, self._base_tgz)
        self._tools = download_directory / "piuparts-tools"
        self._tools.mkdir()
        for name, text in (("mount", MOUNT_WRAPPER), ("umount", UMOUNT_WRAPPER)):
            (self._tools / name).write_text(text, encoding="utf-8")
            (self._tools / name).chmod(0o755)
        self._scripts = download_directory / "piuparts-scripts"
        self._scripts.mkdir()
        self._write_scripts(self._scripts)
        return True

    def _write_scripts(self, directory: Path) -> None:
        """A post_chroot_unpack script adding the extra repositories to the chroot."""
        if not self.data.extra_repositories:
            return
        lines = ["#!/bin/sh", "set -eu"]
        for index, repository in enumerate(self.data.extra_repositories):
            target = f"/etc/apt/sources.list.d/debusine-extra-{index}.sources"
            lines.append(f"printf %s {shlex.quote(repository.as_deb822())} > {target}")
        script = directory / "post_chroot_unpack_debusine"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        script.chmod(0o755)

    def command(self, execute_directory: Path) -> list[str]:
        """piuparts' command line, in its user namespace."""
        if self._base_tgz is None or self._tools is None or self._scripts is None:
            raise TaskError("configure_for_execution comes first")
        path = f"{self._tools}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return [
            "unshare",
            *user_namespace_arguments_for(self.host_command_prefix),
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "env",
            f"PATH={path}",
            f"TMPDIR={execute_directory}",
            "piuparts",
            # The tarball's APT sources are the ones to test against.
            "--keep-sources-list",
            "--allow-database",
            "--warn-on-leftovers-after-purge",
            f"--basetgz={self._base_tgz}",
            f"--scriptsdir={self._scripts}",
            *(str(deb) for deb in self._debs),
        ]

    def run(self, execute_directory: Path) -> bool:
        argv = [*self.host_command_prefix, *self.command(execute_directory)]
        log = self.open_debug_log_file(PIUPARTS_LOG)
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        returncode = subprocess.run(
            argv,
            cwd=execute_directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
        log.write(f"piuparts exit status: {returncode}\n")
        return returncode == 0


def user_namespace_arguments_for(prefix: list[str]) -> list[str]:
    """
    The user namespace options of `unshare` for the user who runs the command: the current
    one, unless `prefix` switches to another user (then never root: a namespace is needed).
    """
    if prefix:
        return ["--map-auto", "--map-root-user"]
    return user_namespace_arguments()
