"""Tests of the matching rules of the scheduler (no database)."""

from __future__ import annotations

from typing import Any

from debusine.protocol.generations import legacy_view_of_metadata
from debusine.server.scheduler.matching import Candidate, IdleWorker, Matcher, can_run

VERSIONS = {"noop:version": 1, "sleep:version": 1}


def noop(work_request_id: int = 1, arch: str | None = None) -> Candidate:
    return Candidate(work_request_id, "Worker", "noop", arch)


def test_external_workers_run_worker_tasks_with_the_right_version() -> None:
    assert can_run("external", VERSIONS, noop())
    assert not can_run("signing", VERSIONS, noop())
    assert not can_run("celery", VERSIONS, noop())
    assert not can_run("external", {"noop:version": 2}, noop())
    assert not can_run("external", {}, noop())
    # A version reported as a string is not the version.
    assert not can_run("external", {"noop:version": "1"}, noop())


def test_tasks_unknown_to_the_server_never_run() -> None:
    assert not can_run("external", {"mystery:version": 1}, Candidate(1, "Worker", "mystery", None))


def test_allowlist_wins_over_denylist() -> None:
    assert not can_run("external", {**VERSIONS, "tasks_allowlist": ["sleep"]}, noop())
    assert can_run("external", {**VERSIONS, "tasks_allowlist": ["noop"]}, noop())
    assert not can_run("external", {**VERSIONS, "tasks_denylist": ["noop"]}, noop())
    assert can_run(
        "external", {**VERSIONS, "tasks_allowlist": ["noop"], "tasks_denylist": ["noop"]}, noop()
    )


def test_host_architecture_must_be_supported() -> None:
    metadata: dict[str, Any] = {**VERSIONS, "system:architectures": ["amd64", "i386"]}
    assert can_run("external", metadata, noop(arch="i386"))
    assert not can_run("external", metadata, noop(arch="arm64"))
    assert not can_run("external", VERSIONS, noop(arch="amd64"))


def test_each_candidate_goes_to_the_earliest_connected_capable_worker() -> None:
    workers = [
        IdleWorker(10, "external", 1, {**VERSIONS, "tasks_denylist": ["noop"]}),
        IdleWorker(11, "external", 1, VERSIONS),
        IdleWorker(12, "external", 1, {**VERSIONS, "system:architectures": ["arm64"]}),
    ]
    matcher = Matcher(workers)

    assert matcher.assign(noop(1)) == 11
    assert matcher.assign(noop(2)) == 12
    assert matcher.assign(noop(3)) is None
    assert matcher.assign(Candidate(4, "Worker", "sleep", None)) == 10
    assert matcher.free_slots == 0


def test_concurrency_gives_several_slots() -> None:
    matcher = Matcher([IdleWorker(1, "external", 2, VERSIONS), IdleWorker(2, "external", 0, {})])

    assert [matcher.assign(noop(i)) for i in range(3)] == [1, 1, None]


def test_016_workers_match_on_their_tags_and_get_only_what_they_can_express() -> None:
    reported = {
        "system:worker_version": "0.16.2",
        "system:native_architecture": "amd64",
        "provided_tags": [
            "worker:build-arch:amd64",
            "worker:task:worker:noop:version:1",
            "worker:task:worker:sleep:version:1",
        ],
    }
    metadata = legacy_view_of_metadata(reported)
    assert can_run("external", metadata, noop())
    assert can_run("external", metadata, noop(arch="amd64"))
    assert not can_run("external", metadata, noop(arch="arm64"))
    # `sleep` is ours: a 0.16 worker reporting it is still never given it (no 0.16 payload).
    assert not can_run("external", metadata, Candidate(1, "Worker", "sleep", None))
    assert can_run("external", VERSIONS, Candidate(1, "Worker", "sleep", None))
