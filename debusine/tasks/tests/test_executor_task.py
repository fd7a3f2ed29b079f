"""
ExecutorTask without a server: environment lookup completion and resolution, can_run_on,
run_logged; and the executor-related task data models (ExtraRepository).

The helpers that talk to a server are tested in tests/integration/test_executor_task.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

from debusine.tasks import (
    BackendType,
    BaseDynamicTaskDataWithExecutor,
    BaseTaskDataWithExecutor,
    ExtraRepository,
    Lookup,
    LookupFailedError,
    LookupResult,
    TaskContext,
)
from debusine.tasks.executor_task import ExecutorTask, complete_environment_lookup

HOST = subprocess.run(
    ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
).stdout.strip()


class ProbeData(BaseTaskDataWithExecutor):
    host_architecture: str | None = None


class Probe(
    ExecutorTask[ProbeData, BaseDynamicTaskDataWithExecutor],
    abstract=True,
    name="probe",
    version=1,
    tools=("probe",),
):
    pass


def variants(environment: Lookup | None, **data: Any) -> list[Lookup]:
    return Probe({"environment": environment, **data}).environment_lookup_variants()


def test_match_lookup_gets_architecture_format_backend_then_variants() -> None:
    assert variants("debian/match:codename=bookworm", host_architecture="arm64") == [
        "debian/match:codename=bookworm:architecture=arm64:format=tarball:backend=unshare"
        ":variant=probe",
        "debian/match:codename=bookworm:architecture=arm64:format=tarball:backend=unshare"
        ":variant=",
    ]


def test_architecture_defaults_to_the_machine_and_given_filters_are_kept() -> None:
    assert variants("debian/match:codename=trixie:format=image") == [
        f"debian/match:codename=trixie:format=image:architecture={HOST}:backend=unshare"
        ":variant=probe",
        f"debian/match:codename=trixie:format=image:architecture={HOST}:backend=unshare:variant=",
    ]
    # A lookup naming its variant is tried alone.
    assert variants("debian/match:codename=bookworm:variant=sbuild", host_architecture="i386") == [
        "debian/match:codename=bookworm:variant=sbuild:architecture=i386:format=tarball"
        ":backend=unshare"
    ]


def test_backend_decides_format() -> None:
    assert variants("debian/match:codename=bookworm", backend="incus-vm")[0] == (
        f"debian/match:codename=bookworm:architecture={HOST}:format=image:backend=incus-vm"
        ":variant=probe"
    )
    assert Probe({"backend": "auto"}).backend == BackendType.UNSHARE


def test_lookups_that_designate_one_environment_are_kept() -> None:
    assert variants(None) == []
    assert variants(42) == [42]
    assert variants("debian/bookworm") == ["debian/bookworm"]
    assert variants("debian@debian:environments/match:codename=x/extra") == [
        "debian@debian:environments/match:codename=x/extra"
    ]


def test_dictionary_lookups_get_lookup_filters() -> None:
    lookup = {"collection": "debian@debian:environments", "data__codename": "bookworm"}
    assert variants(lookup, host_architecture="amd64") == [
        {
            **lookup,
            "lookup__architecture": "amd64",
            "lookup__format": "tarball",
            "lookup__backend": "unshare",
            "lookup__variant": "probe",
        },
        {
            **lookup,
            "lookup__architecture": "amd64",
            "lookup__format": "tarball",
            "lookup__backend": "unshare",
            "lookup__variant": "",
        },
    ]
    given = {**lookup, "data__architecture__startswith": "arm", "lookup__variant": "x"}
    assert complete_environment_lookup(
        given, architecture="amd64", backend=BackendType.UNSHARE, variant=None
    ) == {**given, "lookup__format": "tarball", "lookup__backend": "unshare"}
    assert variants(given) == [
        {**given, "lookup__format": "tarball", "lookup__backend": "unshare"}
    ]


class Resolver:
    """Answers lookups from a table; records what it was asked."""

    def __init__(self, table: dict[str, int]) -> None:
        self.table = table
        self.asked: list[tuple[Lookup, str, str | None]] = []

    def lookup_single(
        self, lookup: Lookup, *, expect_type: str, default_category: str | None = None
    ) -> LookupResult:
        self.asked.append((lookup, expect_type, default_category))
        if isinstance(lookup, str) and lookup in self.table:
            return LookupResult("a", artifact=self.table[lookup])
        raise LookupFailedError(f"{lookup!r} matches nothing")

    def lookup_multiple(
        self,
        lookup: Lookup | list[Lookup],
        *,
        expect_type: str,
        default_category: str | None = None,
    ) -> list[LookupResult]:
        raise AssertionError("not used")


def test_resolution_prefers_the_task_variant_then_falls_back() -> None:
    task = Probe({"environment": "debian/match:codename=bookworm", "host_architecture": "amd64"})
    specific, generic = task.environment_lookup_variants()
    resolver = Resolver({str(specific): 7, str(generic): 8})
    assert task.resolve_environment(resolver) == 7
    resolver = Resolver({str(generic): 8})
    assert task.compute_dynamic_data(resolver) == BaseDynamicTaskDataWithExecutor(environment_id=8)
    assert resolver.asked == [
        (specific, "artifact", "debian:environments"),
        (generic, "artifact", "debian:environments"),
    ]
    with pytest.raises(LookupFailedError) as raised:
        task.resolve_environment(Resolver({}))
    message = str(raised.value)
    assert "no environment matches 'debian/match:codename=bookworm'" in message
    assert "architecture amd64 and backend unshare" in message
    assert "variant=probe" in message and "variant=' matches nothing" in message
    assert Probe({}).resolve_environment(Resolver({})) is None


def test_can_run_on_needs_the_backend_and_the_tools() -> None:
    task = Probe({"environment": 1})
    ready = {"executor:unshare:available": True, "probe:available": True}
    assert task.can_run_on(ready) is True
    assert task.can_run_on({**ready, "executor:unshare:available": False}) is False
    assert task.can_run_on({"probe:available": True}) is False
    assert task.can_run_on({**ready, "probe:available": False}) is False
    assert task.can_run_on({"executor:unshare:available": True}) is False
    # Backends this worker does not implement are never reported available.
    qemu = Probe({"environment": 1, "backend": "qemu"})
    assert qemu.can_run_on(ready) is False
    assert qemu.can_run_on({**ready, "executor:qemu:available": True}) is True


def test_tool_available() -> None:
    assert ExecutorTask.tool_available("sh") is True
    assert ExecutorTask.tool_available("no-such-tool-here") is False


class Logged(Probe, abstract=True):
    statuses: list[int]

    def run(self, execute_directory: Path) -> bool:
        self.statuses = [
            self.run_logged(
                ["sh", "-c", "echo $GREETING; echo oops >&2; exit 2"],
                "cmd.log",
                env={"GREETING": "hi"},
                cwd=execute_directory,
            ),
            self.run_logged(["sleep", "30"], "cmd.log", timeout=0.5),
            self.run_logged(["/nonexistent/tool"], "cmd.log"),
        ]
        return True


def test_run_logged(tmp_path: Path) -> None:
    task = Logged({})
    context = TaskContext.create(1, "System", tmp_path)
    started = time.monotonic()
    assert task.execute(context) is True
    assert time.monotonic() - started < 10
    assert task.statuses == [2, -15, 127]
    log = (context.debug_log_directory / "cmd.log").read_text()
    assert log.startswith(
        "$ sh -c 'echo $GREETING; echo oops >&2; exit 2'\nhi\noops\nexit status 2"
    )
    assert "$ sleep 30\ntimed out after 0.5 s: stopping it\nexit status -15" in log
    assert "$ /nonexistent/tool\ncannot run /nonexistent/tool:" in log


def test_task_data_and_dynamic_data_models() -> None:
    data = BaseTaskDataWithExecutor()
    assert (data.backend, data.environment) == (BackendType.AUTO, None)
    assert data.task_configuration == "default@debusine:task-configuration"
    with pytest.raises(pydantic.ValidationError):
        BaseTaskDataWithExecutor.model_validate({"backend": "chroot"})
    with pytest.raises(pydantic.ValidationError):
        BaseTaskDataWithExecutor.model_validate({"unknown": 1})
    assert BaseDynamicTaskDataWithExecutor().environment_id is None


KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n"


def test_extra_repository_deb822() -> None:
    plain = ExtraRepository(
        url="http://deb.debian.org/debian", suite="bookworm-backports", components=["main"]
    )
    assert plain.as_deb822() == (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n"
        "Components: main\n"
    )
    flat = ExtraRepository(url="https://example.org/repo", suite="./", signing_key=KEY)
    assert flat.as_deb822() == (
        "Types: deb\nURIs: https://example.org/repo\nSuites: ./\nSigned-By:\n"
        " -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n =abcd\n"
        " -----END PGP PUBLIC KEY BLOCK-----\n"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"suite": "bookworm"}, "components are required"),
        ({"suite": "bookworm", "components": []}, "components are required"),
        ({"suite": "./", "components": ["main"]}, "flat repository"),
        ({"suite": "bad;suite", "components": ["main"]}, "invalid suite"),
        ({"suite": "bookworm", "components": ["ma in"]}, "invalid component"),
        ({"suite": "bookworm", "components": ["main"], "extra": 1}, "Extra inputs"),
    ],
)
def test_extra_repository_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        ExtraRepository.model_validate({"url": "http://example.org/", **fields})


class LongTool(Probe, abstract=True):
    """Runs a tool that records its PID and then sleeps, through `run_logged`."""

    def run(self, execute_directory: Path) -> bool:
        script = f"echo $$ > {execute_directory}/tool.pid; exec sleep 300"
        return self.run_logged(["sh", "-c", script], "tool.log") == 0


def test_stopping_the_task_also_stops_the_tool_it_runs(tmp_path: Path) -> None:
    # The worker stops a task (abort, shutdown) by signalling the task's process group: a tool
    # started by run_logged must be in it, or it would outlive the task.
    import asyncio

    from debusine.worker.runner import TaskProcess

    context = TaskContext.create(1, "System", tmp_path)
    pid_file = context.execute_directory / "tool.pid"

    async def scenario() -> int:
        process = TaskProcess.start(LongTool({}), context)
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "the tool did not start"
            await asyncio.sleep(0.01)
        tool_pid = int(pid_file.read_text())
        assert os.getpgid(tool_pid) == process.pid
        await process.stop(grace_period=10)
        return tool_pid

    tool_pid = asyncio.run(scenario())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{tool_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{tool_pid}").exists()
