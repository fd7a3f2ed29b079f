"""Tests of the Debusine dialects: telling peers apart and writing 0.16 payloads."""

from __future__ import annotations

import pytest

from debusine.protocol.generations import (
    USER_AGENT_GENERATION_KEY,
    CannotExpressError,
    Generation,
    can_express,
    dynamic_data_for,
    generation_from_metadata,
    generation_from_user_agent,
    legacy_view_of_metadata,
    task_data_for,
    with_user_agent_generation,
)

#: What the 0.16.2 worker reports (shortened).
V016_METADATA = {
    "system:cpu_count": 2,
    "system:native_architecture": "amd64",
    "system:worker_version": "0.16.2",
    "system:worker_type": "external",
    "provided_tags": [
        "worker:build-arch:amd64",
        "worker:build-arch:i386",
        "worker:cap:sbuild",
        "worker:executor:unshare",
        "worker:task:signing:debsign:version:1",
        "worker:task:worker:noop:version:1",
        "worker:type:external",
    ],
}


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        ("debusine/0.16.2", Generation.V0_16),
        ("debusine/0.14.6", Generation.V0_16),
        ("debusine", Generation.V0_16),
        ("debusine/0.14.5", Generation.LEGACY),
        ("python-requests/2.28.1", None),
        ("Python/3.11 aiohttp/3.8.4", None),
        ("debusine-worker-ng/1", None),
        (None, None),
    ],
)
def test_generation_from_user_agent(user_agent: str | None, expected: Generation | None) -> None:
    assert generation_from_user_agent(user_agent) is expected


def test_generation_from_metadata() -> None:
    assert generation_from_metadata(V016_METADATA) is Generation.V0_16
    assert generation_from_metadata({"noop:version": 1}) is Generation.LEGACY
    assert generation_from_metadata({"system:host_architecture": "amd64"}) is Generation.LEGACY
    assert generation_from_metadata({}) is None


def test_016_tags_read_as_the_keys_the_scheduler_matches_on() -> None:
    view = legacy_view_of_metadata(V016_METADATA)
    assert view["noop:version"] == 1
    assert view["signing:debsign:version"] == 1
    assert view["executor:unshare:available"] is True
    assert view["sbuild:available"] is True
    assert view["system:host_architecture"] == "amd64"
    assert view["system:architectures"] == ["amd64", "i386"]
    # Keys already there (static metadata) win; old metadata is left alone.
    assert legacy_view_of_metadata({**V016_METADATA, "noop:version": 7})["noop:version"] == 7
    old = {"noop:version": 1, "system:architectures": ["amd64"]}
    assert legacy_view_of_metadata(old) == old


def test_task_data_in_the_016_shape() -> None:
    assert task_data_for(Generation.V0_16, "Worker", "noop", {"result": True}) == {
        "result": "success"
    }
    assert task_data_for(Generation.V0_16, "Worker", "noop", {"result": False}) == {
        "result": "failure"
    }
    sbuild = {"input": {"source_artifact": 1}, "host_architecture": "amd64", "environment": 2}
    assert task_data_for(Generation.V0_16, "Worker", "sbuild", sbuild) == {
        "input": {"source_artifact": 1},
        "build_architecture": "amd64",
        "environment": 2,
    }
    # The legacy shape is ours: unchanged.
    assert task_data_for(Generation.LEGACY, "Worker", "sbuild", sbuild) == sbuild
    with pytest.raises(CannotExpressError):
        task_data_for(Generation.V0_16, "Worker", "blhc", {})
    assert not can_express(Generation.V0_16, "Worker", "blhc")
    assert can_express(Generation.LEGACY, "Worker", "blhc")


def test_dynamic_data_in_the_016_shape() -> None:
    repositories = [{"url": "http://deb.example.org/", "suite": "sid"}]
    dynamic = {"task_configuration_id": 4, "environment_id": 9, "subject": "hello"}
    assert dynamic_data_for(
        Generation.V0_16, "sbuild", {"extra_repositories": repositories}, dynamic
    ) == {
        "environment_id": 9,
        "subject": "hello",
        "task_input_fields": {},
        "extra_repositories": repositories,
    }
    assert dynamic_data_for(Generation.LEGACY, "sbuild", {}, dynamic) == dynamic
    assert dynamic_data_for(Generation.V0_16, "noop", {}, None) is None


def test_the_user_agent_fills_in_only_when_the_metadata_says_nothing() -> None:
    bare = {"system:cpu_count": 2}
    assert with_user_agent_generation(bare, "debusine/0.16.2") == {
        **bare,
        USER_AGENT_GENERATION_KEY: "0.16",
    }
    assert with_user_agent_generation(bare, "python-requests/2.28") == bare
    assert with_user_agent_generation({**bare, USER_AGENT_GENERATION_KEY: "0.16"}, None) == bare
    assert with_user_agent_generation(V016_METADATA, "python-requests/2.28") == V016_METADATA
    old = {"noop:version": 1}
    assert with_user_agent_generation(old, "debusine/0.16.2") == old
    assert generation_from_metadata({USER_AGENT_GENERATION_KEY: "0.16"}) is Generation.V0_16
    assert generation_from_metadata({USER_AGENT_GENERATION_KEY: "9.9"}) is None
