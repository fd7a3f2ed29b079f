"""Tests of the dynamic metadata a worker reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from debusine.worker.metadata import dynamic_metadata


def fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH directory: each test puts the host tools it wants in it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


def test_full_metadata_with_every_tool(tools: Path) -> None:
    fake_tool(tools, "dpkg", 'test "$1" = --print-architecture && echo amd64')
    fake_tool(tools, "arch-test", 'test "$1" = -n && echo "amd64 i386 x32"')
    fake_tool(tools, "unshare", "exit 0")
    metadata = dynamic_metadata()
    assert metadata["system:host_architecture"] == "amd64"
    assert metadata["system:architectures"] == ["amd64", "i386", "x32"]
    assert metadata["system:worker_type"] == "external"
    assert metadata["executor:unshare:available"] is True
    assert isinstance(metadata["system:cpu_count"], int)
    assert metadata["system:cpu_count"] >= 1
    assert metadata["system:total_physical_memory"] > 1024 * 1024
    assert metadata["noop:version"] == 1
    assert metadata["sleep:version"] == 1


def test_missing_arch_test_falls_back_to_the_host_architecture(tools: Path) -> None:
    fake_tool(tools, "dpkg", "echo arm64")
    metadata = dynamic_metadata()
    assert metadata["system:architectures"] == ["arm64"]
    assert metadata["executor:unshare:available"] is False


def test_failing_tools_are_treated_as_absent(tools: Path) -> None:
    fake_tool(tools, "dpkg", "echo arm64")
    fake_tool(tools, "arch-test", "echo broken >&2; exit 1")
    fake_tool(tools, "unshare", "echo 'unshare: Operation not permitted' >&2; exit 1")
    metadata = dynamic_metadata()
    assert metadata["system:architectures"] == ["arm64"]
    assert metadata["executor:unshare:available"] is False


def test_no_host_tools_at_all(tools: Path) -> None:
    metadata = dynamic_metadata()
    assert "system:host_architecture" not in metadata
    assert metadata["system:architectures"] == []
    assert metadata["executor:unshare:available"] is False


def test_real_host_tools() -> None:
    """On this machine (Debian): dpkg gives the architecture; it is among those reported."""
    metadata = dynamic_metadata()
    host = metadata["system:host_architecture"]
    assert host in metadata["system:architectures"]
