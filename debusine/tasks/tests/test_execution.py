"""Tests of task execution: the stages, their log, debug log files and task metadata."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from debusine.tasks import (
    BaseTask,
    BaseTaskData,
    DynamicTaskDataError,
    Noop,
    Sleep,
    TaskContext,
    TaskDataError,
    TaskType,
    task_version_metadata,
)
from debusine.tasks.execution import (
    CONSISTENCY_LOG,
    STAGES_LOG,
    DebugLogs,
    check_debug_log_name,
    remaining_debug_logs,
)

STAGE_NAMES = [
    "fetch_input",
    "configure_for_execution",
    "prepare_to_run",
    "run",
    "check_directory_for_consistency_errors",
    "upload_artifacts",
    "cleanup",
]


@pytest.fixture
def context(tmp_path: Path) -> Iterator[TaskContext]:
    yield TaskContext.create(42, "System", parent=tmp_path)


class ScriptData(BaseTaskData):
    fail_in: str | None = None
    result: bool = True
    problems: list[str] = []


class Scripted(BaseTask[ScriptData], abstract=True):
    """A task whose stages record their calls and fail where its data says."""

    TASK_TYPE = TaskType.WORKER
    TASK_VERSION = 1
    TASK_DATA_MODEL = ScriptData
    calls: ClassVar[list[str]]

    def _called(self, stage: str) -> None:
        self.calls.append(stage)
        if self.data.fail_in == stage:
            raise RuntimeError(f"{stage} broke")

    def fetch_input(self, destination: Path) -> bool:
        self._called("fetch_input")
        assert destination.is_dir()
        return self.data.fail_in != "fetch_input:false"

    def configure_for_execution(self, download_directory: Path) -> bool:
        self._called("configure_for_execution")
        return True

    def prepare_to_run(self, download_directory: Path, execute_directory: Path) -> None:
        self._called("prepare_to_run")

    def run(self, execute_directory: Path) -> bool:
        self._called("run")
        self.open_debug_log_file("run.log").write("ran\n")
        return self.data.result

    def check_directory_for_consistency_errors(self, build_directory: Path) -> list[str]:
        self._called("check_directory_for_consistency_errors")
        return self.data.problems

    def upload_artifacts(self, directory: Path, *, execution_success: bool) -> None:
        self._called("upload_artifacts")
        self.calls.append(f"execution_success={execution_success}")

    def cleanup(self) -> None:
        self._called("cleanup")


def run_scripted(context: TaskContext, **data: object) -> tuple[bool, list[str]]:
    Scripted.calls = []
    task = Scripted(data)
    return task.execute(context), Scripted.calls


def stages_log(context: TaskContext) -> str:
    return (context.debug_log_directory / STAGES_LOG).read_text()


def test_context_makes_private_directories(tmp_path: Path) -> None:
    first = TaskContext.create(7, "System", parent=tmp_path)
    second = TaskContext.create(7, "System", parent=tmp_path)
    assert first.directory != second.directory
    assert first.directory.name.startswith("debusine-work-request-7-")
    for directory in (first.debug_log_directory, first.input_directory, first.execute_directory):
        assert directory.is_dir()
        assert directory.parent == first.directory


def test_success_runs_every_stage_in_order_and_drops_stages_log(context: TaskContext) -> None:
    success, calls = run_scripted(context)
    assert success is True
    assert calls == [*STAGE_NAMES[:-1], "execution_success=True", "cleanup"]
    # stages.log is gone; the log the task wrote on purpose stays for upload.
    assert [path.name for path in remaining_debug_logs(context.debug_log_directory)] == ["run.log"]


def test_failure_keeps_a_stages_log_naming_every_stage(context: TaskContext) -> None:
    success, calls = run_scripted(context, result=False)
    assert success is False
    assert "execution_success=False" in calls
    log = stages_log(context)
    for stage in STAGE_NAMES:
        assert f"{stage}: started" in log
    assert "run: finished, returned False" in log
    assert log.rstrip().endswith("result: failure")


@pytest.mark.parametrize("stage", ["configure_for_execution", "run", "upload_artifacts"])
def test_exception_in_a_stage_fails_the_task_and_logs_the_traceback(
    context: TaskContext, stage: str
) -> None:
    success, calls = run_scripted(context, fail_in=stage)
    assert success is False
    assert calls[-1] == "cleanup"  # cleanup runs whatever happened
    log = stages_log(context)
    assert f"{stage}: failed" in log
    assert "Traceback (most recent call last)" in log
    assert f"RuntimeError: {stage} broke" in log
    later = STAGE_NAMES[STAGE_NAMES.index(stage) + 1 : -1]
    for skipped in later:
        assert skipped not in calls


def test_exception_in_cleanup_fails_an_otherwise_successful_task(context: TaskContext) -> None:
    success, _calls = run_scripted(context, fail_in="cleanup")
    assert success is False
    assert "cleanup: failed" in stages_log(context)


def test_fetch_input_returning_false_skips_to_cleanup(context: TaskContext) -> None:
    success, calls = run_scripted(context, fail_in="fetch_input:false")
    assert success is False
    assert calls == ["fetch_input", "cleanup"]


def test_consistency_problems_fail_the_task_and_are_logged(context: TaskContext) -> None:
    success, calls = run_scripted(context, problems=["missing foo.deb", "stray file"])
    assert success is False
    assert "execution_success=False" in calls
    consistency = (context.debug_log_directory / CONSISTENCY_LOG).read_text()
    assert consistency == "missing foo.deb\nstray file\n"


def test_noop_returns_its_result(context: TaskContext, tmp_path: Path) -> None:
    assert Noop({"result": True}).execute(context) is True
    assert remaining_debug_logs(context.debug_log_directory) == []
    other = TaskContext.create(43, "System", parent=tmp_path)
    assert Noop({"result": False}).execute(other) is False
    assert [path.name for path in remaining_debug_logs(other.debug_log_directory)] == [STAGES_LOG]


def test_sleep_sleeps(context: TaskContext) -> None:
    assert Sleep({"seconds": 0}).execute(context) is True


def test_a_task_without_run_fails_instead_of_escaping(context: TaskContext) -> None:
    class NoRun(BaseTask[ScriptData], abstract=True):
        TASK_TYPE = TaskType.SERVER
        TASK_VERSION = 1
        TASK_DATA_MODEL = ScriptData

    assert NoRun({}).execute(context) is False
    assert "NotImplementedError" in stages_log(context)


def test_dynamic_task_data_is_validated_strictly() -> None:
    task = Noop({}, {"subject": "hello", "task_configuration_id": 3})
    assert task.dynamic_data is not None and task.dynamic_data.subject == "hello"
    empty = Noop({}, {}).dynamic_data
    assert empty is not None and empty.subject is None
    # None: not computed yet (how the server builds a task to compute them).
    assert Noop({}, None).dynamic_data is None
    with pytest.raises(DynamicTaskDataError, match="invalid dynamic task data") as caught:
        Noop({}, {"unexpected": 1})
    assert isinstance(caught.value, TaskDataError)
    assert caught.value.problems[0][0] == "unexpected"


def test_debug_log_names_must_be_plain_file_names(tmp_path: Path) -> None:
    for bad in ["", ".", "..", "a/b", "x\0y"]:
        with pytest.raises(ValueError, match="invalid debug log file name"):
            check_debug_log_name(bad)
    logs = DebugLogs(tmp_path / "logs")
    stream = logs.open("one.log")
    assert logs.open("one.log") is stream  # one stream per file for the whole run
    stream.write("x\n")
    logs.remove("one.log")
    logs.remove("never-opened.log")
    assert remaining_debug_logs(tmp_path / "logs") == []
    assert remaining_debug_logs(tmp_path / "missing") == []


def test_task_version_metadata_prefixes_non_worker_tasks() -> None:
    saved = {task_type: dict(tasks) for task_type, tasks in BaseTask._registry.items()}
    try:

        class Signer(BaseTask[ScriptData]):
            TASK_TYPE = TaskType.SIGNING
            TASK_NAME = "noop"
            TASK_VERSION = 4
            TASK_DATA_MODEL = ScriptData

        metadata = task_version_metadata()
    finally:
        BaseTask._registry.clear()
        BaseTask._registry.update(saved)
    assert metadata["noop:version"] == 1
    assert metadata["sleep:version"] == 1
    assert metadata["signing:noop:version"] == 4
    assert "signing:noop:version" not in task_version_metadata()
