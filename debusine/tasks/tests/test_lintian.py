"""Tests of the lintian task: task data, output parsing, and real lintian runs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debusine.artifacts import ArtifactCategory
from debusine.tasks import BaseTask, TaskDataError, validate_task_data
from debusine.tasks.lintian import (
    Lintian,
    fails_on,
    lintian_command,
    make_analysis,
    parse_lintian_output,
    parse_tag_line,
)
from debusine.tasks.tests.packages import make_worker_directory
from debusine.tasks.tests.qa_helpers import (
    BOOKWORM_TARBALL,
    WORKER_PREFIX,
    StagesRunner,
    TableResolver,
    build_test_packages,
    tools_available,
)

# --- Task data ----------------------------------------------------------------------------


def test_registered_as_worker_task_version_1() -> None:
    assert BaseTask.class_from_name("Worker", "lintian") is Lintian
    assert Lintian.TASK_VERSION == 1


def test_minimal_data_and_defaults() -> None:
    task = Lintian({"input": {"source_artifact": 12}})
    assert task.data.fail_on_severity == "error"  # 0.12.1's default
    assert task.data.target_distribution == "debian:unstable"
    assert task.data.output.source_analysis and task.data.output.binary_any_analysis
    assert task.data.include_tags == [] and task.data.exclude_tags == []
    assert task.data.backend == "auto" and task.data.environment is None
    assert task.data.host_architecture is None
    assert task.data.task_configuration == "default@debusine:task-configuration"


def test_full_data_validates() -> None:
    data = {
        "input": {
            "source_artifact": "internal@collections/name:build-source",
            "binary_artifacts": ["internal@collections/name:build-amd64", 7],
        },
        "output": {"source_analysis": False},
        "target_distribution": "debian:bookworm",
        "include_tags": ["no-changelog"],
        "exclude_tags": ["no-manual-page"],
        "fail_on_severity": "warning",
        "backend": "unshare",
        "environment": "debian/match:codename=bookworm",
        "host_architecture": "amd64",
    }
    assert validate_task_data("Worker", "lintian", data) == data
    # A dictionary lookup is a valid binary_artifacts.
    validate_task_data(
        "Worker",
        "lintian",
        {"input": {"binary_artifacts": {"collection": "internal@collections"}}},
    )


@pytest.mark.parametrize(
    ("data", "location"),
    [
        ({"input": {}}, "input"),
        ({"input": {"binary_artifacts": []}}, "input"),
        ({"input": {"source_artifact": 1}, "fail_on_severity": "fatal"}, "fail_on_severity"),
        ({"input": {"source_artifact": 1}, "fail_on_severity": "classification"}, ""),
        ({"input": {"source_artifact": 1}, "unknown": True}, "unknown"),
        ({"input": {"source_artifact": 1, "extra": 2}}, "input.extra"),
        ({"input": {"source_artifact": 1}, "output": {"sources": True}}, "output.sources"),
        ({"input": {"binary_artifacts": "single-string"}}, "input.binary_artifacts"),
        ({"input": {"source_artifact": 1}, "backend": "docker"}, "backend"),
    ],
)
def test_bad_data_is_rejected(data: dict[str, Any], location: str) -> None:
    with pytest.raises(TaskDataError) as caught:
        validate_task_data("Worker", "lintian", data)
    assert any(loc.startswith(location) for loc, _ in caught.value.problems)


def test_compute_dynamic_data_resolves_inputs_and_environment() -> None:
    task = Lintian(
        {
            "input": {"source_artifact": "src", "binary_artifacts": ["bin1", "bins"]},
            "environment": 40,
        }
    )
    resolver = TableResolver({"src": 5, "bin1": 6, "bins": [7, 8], 40: 40})
    dynamic = task.compute_dynamic_data(resolver)
    assert dynamic.input_source_artifact_id == 5
    assert dynamic.input_binary_artifacts_ids == [6, 7, 8]
    assert dynamic.environment_id == 40
    assert ("single", "src", "artifact") in resolver.calls
    assert ("multiple", ["bin1", "bins"], "artifact") in resolver.calls
    # The worker accepts what the server computed.
    Lintian(task.data.model_dump(), dynamic.model_dump())


def test_compute_dynamic_data_without_source_or_environment() -> None:
    task = Lintian({"input": {"binary_artifacts": [3]}})
    dynamic = task.compute_dynamic_data(TableResolver({3: 3}))
    assert dynamic.input_source_artifact_id is None
    assert dynamic.environment_id is None
    assert dynamic.input_binary_artifacts_ids == [3]


def test_can_run_on() -> None:
    with_environment = Lintian({"input": {"source_artifact": 1}, "environment": 2})
    assert with_environment.can_run_on({"executor:unshare:available": True})
    assert not with_environment.can_run_on({"executor:unshare:available": False})
    # Without an environment the worker's lintian is used.
    without_environment = Lintian({"input": {"source_artifact": 1}})
    assert without_environment.can_run_on({"lintian:available": True})
    assert not without_environment.can_run_on({"lintian:available": False})
    assert not without_environment.can_run_on({})
    assert Lintian.analyze_worker() == {"lintian:available": tools_available("lintian")}


# --- Output parsing ------------------------------------------------------------------------

#: Real output of lintian 2.116 (--info --show-overrides), shortened; "~" stands for a space.
SAMPLE_OUTPUT = """\
N:
E: hello: no-changelog usr/share/doc/hello/changelog.Debian.gz (non-native package)
N:~
N:   A Debian package that provides a /usr/share/doc/*pkg* directory must
N:   install a changelog file.
N:~
N:   Visibility: error
N:~
N:
W: hello: no-manual-page [usr/bin/hello]
N:~
N:   Each binary in /usr/bin should have a manual page.
N:~
N:
N: We do not need a copyright file second line
O: hello source: no-debian-copyright-in-source
N:~
N:   Every package must include the file /usr/share/doc/*pkg*/copyright.
N:~
N:
M: hello source: some-masked-tag
N:
C: hello source: source-format 3.0 (quilt)
N:
I: hello-data: extended-description-is-probably-too-short
W: package-uses-deprecated-debhelper-compat-version
""".replace("~", " ")  # "N: " (with a space) and "N:" differ


def test_parse_tag_line() -> None:
    assert parse_tag_line("I: hello source: no-dh-sequencer [debian/rules]") == {
        "severity": "info",
        "package": "hello source",
        "tag": "no-dh-sequencer",
        "explanation": "",
        "comment": "",
        "note": "",
        "pointer": "debian/rules",
    }
    tag = parse_tag_line("C: hello: trimmed-field Description a\\n b")
    assert tag is not None
    assert (tag["severity"], tag["note"], tag["pointer"]) == (
        "classification",
        "Description a\\n b",
        "",
    )
    assert parse_tag_line("X: hello-udeb udeb: some-tag")["package"] == "hello-udeb udeb"  # type: ignore[index]
    # Bullseye repeats the tag name alone: ignored.
    assert parse_tag_line("W: package-uses-deprecated-debhelper-compat-version") is None
    with pytest.raises(ValueError, match="cannot parse"):
        parse_tag_line("this is not lintian output")


def test_parse_output_attaches_explanations_and_comments() -> None:
    tags = parse_lintian_output(SAMPLE_OUTPUT.splitlines(keepends=True))
    assert [(t["severity"], t["package"], t["tag"]) for t in tags] == [
        ("error", "hello", "no-changelog"),
        ("warning", "hello", "no-manual-page"),
        ("overridden", "hello source", "no-debian-copyright-in-source"),
        ("classification", "hello source", "source-format"),
        ("info", "hello-data", "extended-description-is-probably-too-short"),
    ]
    assert tags[0]["note"] == "usr/share/doc/hello/changelog.Debian.gz (non-native package)"
    assert tags[0]["explanation"] == (
        "A Debian package that provides a /usr/share/doc/*pkg* directory must\n"
        "install a changelog file.\n\nVisibility: error"
    )
    assert tags[0]["comment"] == ""
    assert tags[1]["pointer"] == "usr/bin/hello"
    assert tags[2]["comment"] == "We do not need a copyright file second line"
    assert tags[2]["explanation"].startswith("Every package must include")
    assert tags[3]["note"] == "3.0 (quilt)"


def test_analysis_and_fail_on_severity() -> None:
    tags = parse_lintian_output(SAMPLE_OUTPUT.splitlines())
    files = {"hello source": "hello_1.dsc", "hello": "hello_1_amd64.deb"}
    analysis = make_analysis(
        tags, {"hello source"}, files, lintian_version="2.116", distribution="debian:bookworm"
    )
    assert analysis["version"] == 1
    assert [t["tag"] for t in analysis["tags"]] == [
        "no-debian-copyright-in-source",
        "source-format",
    ]
    assert analysis["tags"][0]["package"] == "hello"  # without " source"
    summary = analysis["summary"]
    assert summary["tags_count_by_severity"] == {
        "error": 0,
        "warning": 0,
        "info": 0,
        "pedantic": 0,
        "experimental": 0,
        "overridden": 1,
        "classification": 1,
    }
    assert summary["package_filename"] == {"hello": "hello_1.dsc"}
    assert summary["tags_found"] == ["source-format"]
    assert summary["overridden_tags_found"] == ["no-debian-copyright-in-source"]
    assert (summary["lintian_version"], summary["distribution"]) == ("2.116", "debian:bookworm")

    binary = make_analysis(tags, {"hello"}, files, lintian_version="x", distribution="d")
    # Sorted from the most severe.
    assert [t["tag"] for t in binary["tags"]] == ["no-changelog", "no-manual-page"]

    assert fails_on(tags, "error") and fails_on(tags, "warning")
    assert not fails_on(tags, "none")
    info_only = [t for t in tags if t["severity"] in ("info", "classification")]
    assert not fails_on(info_only, "error") and not fails_on(info_only, "warning")
    assert fails_on(info_only, "info")
    # "overridden" is below "experimental": failing on it fails on every real tag...
    assert fails_on([t for t in tags if t["severity"] == "overridden"], "overridden")
    # ...but classification tags never fail a task.
    assert not fails_on([t for t in tags if t["severity"] == "classification"], "overridden")


def test_command_line() -> None:
    argv = lintian_command(
        ["a.dsc", "b.deb"],
        include_tags=["t1", "t2"],
        exclude_tags=["t3"],
        target_distribution="debian:bookworm",
    )
    assert argv == [
        "lintian",
        "--no-cfg",
        "--display-level",
        ">=classification",
        "--display-experimental",
        "--info",
        "--show-overrides",
        "--tags=t1,t2",
        "--suppress-tags=t3",
        "a.dsc",
        "b.deb",
    ]
    jessie = lintian_command([], include_tags=[], exclude_tags=[], target_distribution="jessie")
    assert ">=pedantic" in jessie


# --- Real runs -----------------------------------------------------------------------------

needs_lintian = pytest.mark.skipif(
    not tools_available("lintian", "dpkg-buildpackage"), reason="lintian is not installed"
)


@pytest.fixture(scope="module")
def packages() -> Iterator[dict[str, Path]]:
    directory = make_worker_directory("debusine-lintian-packages-")
    try:
        yield build_test_packages(directory)
    finally:
        shutil.rmtree(directory)


def _run(
    task: Lintian, inputs: list[Path], environment: Path | None = None
) -> tuple[bool, StagesRunner]:
    runner = StagesRunner(task, environment=environment)
    task.host_command_prefix = WORKER_PREFIX
    runner.add_input(*inputs)
    assert task.configure_for_execution(runner.input_directory)
    return task.run(runner.execute_directory), runner


@needs_lintian
def test_real_run_of_source_and_binaries(packages: dict[str, Path]) -> None:
    task = Lintian(
        {"input": {"source_artifact": 1, "binary_artifacts": [2, 3]}},
        {"input_source_artifact_id": 1, "input_binary_artifacts_ids": [2, 3]},
    )
    dsc = packages["dsc"]
    inputs = [
        dsc,
        *(dsc.parent / name for name in ("hello-debusine_1.0.orig.tar.gz",)),
        next(dsc.parent.glob("hello-debusine_1.0-1.debian.tar.*")),
        packages["any"],
        packages["all"],
    ]
    success, runner = _run(task, inputs)
    try:
        # The binaries have no changelog: errors, and fail_on_severity is "error".
        assert success is False
        assert task.check_directory_for_consistency_errors(runner.execute_directory) == []
        artifacts = task.output_artifacts(runner.execute_directory)
        assert [a.category for a in artifacts] == [ArtifactCategory.LINTIAN] * 3
        by_architecture = {a.data_json()["architecture"]: a for a in artifacts}
        assert set(by_architecture) == {"source", "all", "amd64"}

        source = by_architecture["source"].data_json()["summary"]
        assert source["package_filename"] == {"hello-debusine": "hello-debusine_1.0-1.dsc"}
        assert source["tags_count_by_severity"]["error"] == 0
        assert "no-dh-sequencer" in source["tags_found"]
        assert source["lintian_version"].startswith("2.")

        arch_all = by_architecture["all"].data_json()["summary"]
        assert arch_all["package_filename"] == {
            "hello-debusine-data": "hello-debusine-data_1.0-1_all.deb"
        }
        assert "no-changelog" in arch_all["tags_found"]
        arch_any = by_architecture["amd64"].data_json()["summary"]
        assert "no-manual-page" in arch_any["tags_found"]
        assert set(arch_any["package_filename"]) == {"hello-debusine"}

        analysis = json.loads(by_architecture["all"].files["analysis.json"].read_text())
        assert {t["package"] for t in analysis["tags"]} == {"hello-debusine-data"}
        # lintian explains a tag the first time it reports it (for whichever package).
        every_tag = [
            tag
            for artifact in artifacts
            for tag in json.loads(artifact.files["analysis.json"].read_text())["tags"]
        ]
        explained = {t["tag"] for t in every_tag if t["explanation"]}
        assert explained == {t["tag"] for t in every_tag}
        assert "E: hello-debusine-data: no-changelog" in (
            by_architecture["all"].files["lintian.txt"].read_text()
        )
        assert "$ runuser" in runner.debug_log("lintian.log") or not WORKER_PREFIX
    finally:
        runner.close()


@needs_lintian
def test_real_run_of_source_only_passes_fail_on_error(packages: dict[str, Path]) -> None:
    task = Lintian(
        {"input": {"source_artifact": 1}, "output": {"binary_all_analysis": False}},
        {"input_source_artifact_id": 1},
    )
    dsc = packages["dsc"]
    inputs = [
        dsc,
        dsc.parent / "hello-debusine_1.0.orig.tar.gz",
        next(dsc.parent.glob("hello-debusine_1.0-1.debian.tar.*")),
    ]
    success, runner = _run(task, inputs)
    try:
        assert success is True  # only info, pedantic... tags in the source
        artifacts = task.output_artifacts(runner.execute_directory)
        # binary-all disabled; binary-any enabled but empty.
        assert len(artifacts) == 2
        empty = next(a for a in artifacts if a.data_json()["architecture"] != "source")
        assert empty.data_json()["summary"]["tags_found"] == []
    finally:
        runner.close()


@needs_lintian
def test_configure_fails_without_packages(tmp_path: Path) -> None:
    task = Lintian({"input": {"source_artifact": 1}}, {"input_source_artifact_id": 1})
    (tmp_path / "README").write_text("nothing to check\n")
    runner = StagesRunner(task)
    try:
        assert task.configure_for_execution(tmp_path) is False
        assert "No *.dsc, *.deb or *.udeb" in runner.debug_log("configure_for_execution.log")
    finally:
        runner.close()


@pytest.mark.skipif(
    not tools_available("unshare", "dpkg-buildpackage"),
    reason="unshare or dpkg-dev is not installed",
)
@pytest.mark.usefixtures("buildd_tarball")
def test_real_run_in_environment(packages: dict[str, Path]) -> None:
    """lintian installed in the bookworm environment and run there (about 30 s)."""
    task = Lintian(
        {
            "input": {"binary_artifacts": [2]},
            "environment": 9,
            "fail_on_severity": "none",
            "target_distribution": "debian:bookworm",
            "include_tags": ["no-changelog", "no-manual-page"],
        },
        {"input_binary_artifacts_ids": [2], "environment_id": 9},
    )
    success, runner = _run(task, [packages["any"], packages["all"]], environment=BOOKWORM_TARBALL)
    try:
        assert success is True  # fail_on_severity none
        log = runner.debug_log("lintian.log")
        assert "in the environment: $ apt-get --yes" in log
        artifacts = task.output_artifacts(runner.execute_directory)
        summaries = {a.data_json()["architecture"]: a.data_json()["summary"] for a in artifacts}
        assert summaries["all"]["tags_found"] == ["no-changelog"]
        assert summaries["amd64"]["tags_found"] == ["no-changelog", "no-manual-page"]
        assert summaries["amd64"]["lintian_version"].startswith("2.116")
        assert summaries["source"]["tags_found"] == []
    finally:
        runner.close()
