"""
What a task has while it runs on a worker: its private directories and its debug log files.

A worker gives each work request a fresh directory (`TaskContext`). The task's stages read and
write under it, and write debug log files (`stages.log` and whatever the task opens) into its
`debug-logs/` subdirectory; the worker uploads what is left there as the work request's
`debusine:work-request-debug-logs` artifact (`upload_debug_logs`). No Django here.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from debusine.client.client import DebusineClient

#: The debug log every run writes: one line per stage, and the traceback of a failing stage.
#: It is removed when the task succeeds, so a successful run usually leaves no debug logs.
STAGES_LOG = "stages.log"

#: Written when `check_directory_for_consistency_errors` finds problems.
CONSISTENCY_LOG = "consistency.log"

#: Content type of every debug log file (they are text written by the worker).
DEBUG_LOG_CONTENT_TYPE = "text/plain; charset=utf-8"

#: Category of the artifact holding a work request's debug logs.
DEBUG_LOGS_CATEGORY = "debusine:work-request-debug-logs"

#: errno values that mean "no space left": the filesystem is full, or the user's quota.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def no_space_error(error: BaseException) -> OSError | None:
    """
    The "no space left" error behind `error` (itself, or what it was raised from or while
    handling), if any: a full disk shows up wherever the next write happens to be.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True)
class TaskContext:
    """The work request a task runs for, and the directory that run may use."""

    work_request_id: int
    #: Name of the work request's workspace: output artifacts go there.
    workspace: str
    #: A directory private to this run, removed by the worker afterwards.
    directory: Path
    #: The server's API URL and the worker's token, for tasks that download input artifacts
    #: and upload output ones (None when the task runs without a server, as in unit tests).
    api_url: str | None = None
    token: str | None = None
    #: Where the worker keeps what outlives one run (the environment cache); None: no cache.
    cache_directory: Path | None = None

    def client(self) -> DebusineClient:
        """A client of the server, authenticated as the worker (no scope: the default)."""
        from debusine.client.client import DebusineClient

        if self.api_url is None:
            raise RuntimeError("this task runs without a server to talk to")
        return DebusineClient(self.api_url, self.token)

    @property
    def debug_log_directory(self) -> Path:
        return self.directory / "debug-logs"

    @property
    def input_directory(self) -> Path:
        """Where `fetch_input` puts the input artifacts."""
        return self.directory / "input"

    @property
    def execute_directory(self) -> Path:
        """Where the task runs and leaves its results."""
        return self.directory / "execute"

    @classmethod
    def create(
        cls,
        work_request_id: int,
        workspace: str,
        parent: Path | None = None,
        *,
        api_url: str | None = None,
        token: str | None = None,
        cache_directory: Path | None = None,
    ) -> TaskContext:
        """
        Make a fresh directory under `parent`, else under TMPDIR when it is set, else the
        system's temporary directory. (Not `tempfile`'s choice when TMPDIR is set: that one
        silently moves to /tmp when TMPDIR is full at its first use, and a worker whose disk
        is full must say so rather than fill another filesystem.)
        """
        if parent is None and os.environ.get("TMPDIR"):
            parent = Path(os.environ["TMPDIR"])
        directory = Path(
            tempfile.mkdtemp(prefix=f"debusine-work-request-{work_request_id}-", dir=parent)
        )
        context = cls(
            work_request_id=work_request_id,
            workspace=workspace,
            directory=directory,
            api_url=api_url,
            token=token,
            cache_directory=cache_directory,
        )
        for subdirectory in (
            context.debug_log_directory,
            context.input_directory,
            context.execute_directory,
        ):
            subdirectory.mkdir()
        return context


def check_debug_log_name(name: str) -> str:
    """Return `name` if it can name a file directly inside the debug log directory."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"invalid debug log file name {name!r}")
    return name


class DebugLogs:
    """The debug log files of one run: opened on first use, appended to, closed at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._open_files: dict[str, TextIO] = {}

    def open(self, name: str) -> TextIO:
        """The file `name` in the debug log directory, opened for appending (text, UTF-8)."""
        stream = self._open_files.get(name)
        if stream is None:
            path = self.directory / check_debug_log_name(name)
            self.directory.mkdir(parents=True, exist_ok=True)
            # Line-buffered: if the task process is killed, what was logged so far is kept.
            stream = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            self._open_files[name] = stream
        return stream

    def close_all(self) -> None:
        for stream in self._open_files.values():
            stream.close()
        self._open_files.clear()

    def remove(self, name: str) -> None:
        """Close and delete the debug log `name` (nothing happens if it does not exist)."""
        stream = self._open_files.pop(name, None)
        if stream is not None:
            stream.close()
        (self.directory / check_debug_log_name(name)).unlink(missing_ok=True)


def remaining_debug_logs(directory: Path) -> list[Path]:
    """The files left in a debug log directory, sorted by name (empty if it does not exist)."""
    try:
        return sorted(path for path in directory.iterdir() if path.is_file())
    except FileNotFoundError:
        return []


def upload_debug_logs(
    client: DebusineClient, work_request_id: int, workspace: str, files: list[Path]
) -> int:
    """
    Create the work request's `debusine:work-request-debug-logs` artifact in `workspace`
    holding `files` (named by their base names), upload their contents, and return its ID.

    Synchronous, like every upload (the client's resumable, verified one): the daemon calls it
    from a thread. Failures raise the client's errors (`ClientError` and its subclasses).
    """
    from debusine.client.uploads import LocalFile

    local_files = {path.name: LocalFile.from_path(path, DEBUG_LOG_CONTENT_TYPE) for path in files}
    artifact = client.artifact_create(
        DEBUG_LOGS_CATEGORY,
        local_files,
        {},
        workspace=workspace,
        work_request=work_request_id,
    )
    client.upload_artifact_files(artifact, local_files)
    return artifact.id
