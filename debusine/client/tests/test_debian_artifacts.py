"""Artifacts prepared from a real upload built with dpkg-buildpackage."""

from __future__ import annotations

from pathlib import Path

import pytest

from debusine.client.debian_artifacts import prepare
from debusine.client.errors import UsageError
from debusine.client.tests.debian_build import BuiltUpload, build_upload


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> BuiltUpload:
    return build_upload(tmp_path_factory.mktemp("build"))


def test_changes_gives_upload_source_binaries_and_sets(upload: BuiltUpload) -> None:
    artifacts = prepare(upload.changes)

    assert [artifact.category for artifact in artifacts] == [
        "debian:upload",
        "debian:source-package",
        "debian:binary-package",
        "debian:binary-package",
        "debian:binary-packages",
    ]
    upload_artifact, source, first, second, packages = artifacts
    assert sorted(upload_artifact.files) == sorted(path.name for path in upload.files())
    assert upload_artifact.data["changes_fields"]["Architecture"] == "source all"
    assert source.data["name"] == "hello-client"
    assert source.data["dsc_fields"]["Format"] == "3.0 (native)"
    assert sorted(source.files) == ["hello-client_1.0.dsc", "hello-client_1.0.tar.xz"]
    assert {first.data["deb_fields"]["Package"], second.data["deb_fields"]["Package"]} == {
        "hello-client",
        "hello-client-data",
    }
    assert first.data["srcpkg_name"] == "hello-client"
    assert first.data["srcpkg_version"] == "1.0"
    assert "control" in first.data["deb_control_files"]
    assert packages.data["architecture"] == "all"
    assert sorted(packages.files) == sorted(path.name for path in upload.debs)
    for artifact in artifacts:
        for local in artifact.files.values():
            assert local.size == local.path.stat().st_size


def test_dsc_and_deb_alone(upload: BuiltUpload) -> None:
    assert [a.category for a in prepare(upload.dsc)] == ["debian:source-package"]
    assert [a.category for a in prepare(upload.debs[0])] == ["debian:binary-package"]


def test_files_that_do_not_match_the_changes_are_refused(
    upload: BuiltUpload, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in upload.files():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / upload.dsc.name).write_bytes(upload.dsc.read_bytes() + b"\n")

    with pytest.raises(UsageError, match="does not match"):
        prepare(copy / upload.changes.name)
    (copy / upload.dsc.name).unlink()
    with pytest.raises(UsageError, match="which is not in"):
        prepare(copy / upload.changes.name)


def test_other_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UsageError, match=r"expected a \.changes"):
        prepare(text)
    with pytest.raises(UsageError, match="no such file"):
        prepare(tmp_path / "missing.changes")
    broken = tmp_path / "broken.deb"
    broken.write_bytes(b"not an ar archive")
    with pytest.raises(UsageError, match="not a readable Debian binary package"):
        prepare(broken)
