"""Artifacts built from real files: an upload made by dpkg-buildpackage, .debs made by dpkg-deb."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from debusine.artifacts import (
    ArtifactCategory,
    DebianAutopkgtest,
    DebianBinaryPackage,
    DebianLintianSummary,
    DebianSourcePackage,
    DebianSystemTarball,
    EmptyArtifactData,
    LocalArtifact,
    LocalArtifactError,
    artifacts_from_changes,
    autopkgtest_artifact,
    binary_package_from_deb,
    binary_packages_from_debs,
    lintian_artifact,
    package_build_log,
    source_package_from_dsc,
    system_tarball,
    upload_from_changes,
    validate_artifact_data,
)
from debusine.client.tests.debian_build import (
    BuiltUpload,
    build_upload,
    dpkg_buildpackage_available,
)

pytestmark = pytest.mark.skipif(
    not dpkg_buildpackage_available(), reason="dpkg-dev is not installed"
)


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> BuiltUpload:
    return build_upload(tmp_path_factory.mktemp("build"))


def copy_of(upload: BuiltUpload, directory: Path) -> BuiltUpload:
    """The upload's files copied to `directory`, to be spoiled by a test."""
    directory.mkdir()
    for path in upload.files():
        shutil.copy(path, directory)
    return BuiltUpload(
        directory=directory,
        changes=directory / upload.changes.name,
        dsc=directory / upload.dsc.name,
        debs=tuple(directory / deb.name for deb in upload.debs),
    )


def build_deb(
    directory: Path, control: str, *, scripts: dict[str, str] | None = None, suffix: str = "deb"
) -> Path:
    """A .deb (or .udeb) with `control` as DEBIAN/control, built by dpkg-deb."""
    root = directory / "root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(control)
    for name, text in (scripts or {}).items():
        script = root / "DEBIAN" / name
        script.write_text(text)
        script.chmod(0o755)
    (root / "usr" / "share" / "doc").mkdir(parents=True)
    (root / "usr" / "share" / "doc" / "readme").write_text("hello\n")
    deb = directory / f"package.{suffix}"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


BINNMU_CONTROL = """\
Package: hello-bin
Source: hello (1.0-1)
Version: 1.0-1+b1
Architecture: amd64
Maintainer: Tests <tests@example.org>
Description: a binNMU of hello
"""


def assert_data_validates(artifact: LocalArtifact) -> None:
    """What the server would receive is valid, and stored as it is."""
    assert validate_artifact_data(artifact.category, artifact.data_json()) == artifact.data_json()


# --- Source packages, binary packages, uploads ------------------------------------------


def test_source_package_from_dsc(upload: BuiltUpload) -> None:
    artifact = source_package_from_dsc(upload.dsc)

    assert artifact.category == ArtifactCategory.SOURCE_PACKAGE
    assert artifact.files == {
        "hello-client_1.0.dsc": upload.dsc,
        "hello-client_1.0.tar.xz": upload.directory / "hello-client_1.0.tar.xz",
    }
    assert isinstance(artifact.data, DebianSourcePackage)
    data = artifact.data_json()
    assert (data["name"], data["version"], data["type"]) == ("hello-client", "1.0", "dpkg")
    assert data["dsc_fields"]["Format"] == "3.0 (native)"
    [listed] = data["dsc_fields"]["Checksums-Sha256"]
    assert listed["name"] == "hello-client_1.0.tar.xz"
    assert listed["size"] == str(artifact.files[listed["name"]].stat().st_size)
    assert_data_validates(artifact)


def test_binary_package_from_deb(upload: BuiltUpload) -> None:
    artifact = binary_package_from_deb(upload.debs[0])

    assert artifact.category == ArtifactCategory.BINARY_PACKAGE
    assert artifact.files == {"hello-client_1.0_all.deb": upload.debs[0]}
    assert artifact.data_json() == {
        "srcpkg_name": "hello-client",
        "srcpkg_version": "1.0",
        "deb_fields": artifact.data_json()["deb_fields"],
        "deb_control_files": ["control"],
    }
    fields = artifact.data_json()["deb_fields"]
    assert (fields["Package"], fields["Version"], fields["Architecture"]) == (
        "hello-client",
        "1.0",
        "all",
    )
    assert fields["Depends"] == "hello-client-data"
    assert_data_validates(artifact)


def test_binnmu_udeb_names_its_source_version_and_control_files(tmp_path: Path) -> None:
    deb = build_deb(
        tmp_path, BINNMU_CONTROL, scripts={"postinst": "#!/bin/sh\nexit 0\n"}, suffix="udeb"
    )

    artifact = binary_package_from_deb(deb)

    assert isinstance(artifact.data, DebianBinaryPackage)
    assert (artifact.data.srcpkg_name, artifact.data.srcpkg_version) == ("hello", "1.0-1")
    assert artifact.data.deb_fields["Version"] == "1.0-1+b1"
    assert artifact.data.deb_control_files == ["control", "postinst"]
    assert list(artifact.files) == ["package.udeb"]


def test_binary_packages_from_debs(upload: BuiltUpload) -> None:
    artifact = binary_packages_from_debs(
        list(upload.debs),
        srcpkg_name="hello-client",
        srcpkg_version="1.0",
        version="1.0",
        architecture="all",
    )

    assert artifact.category == ArtifactCategory.BINARY_PACKAGES
    assert sorted(artifact.files) == sorted(deb.name for deb in upload.debs)
    assert artifact.data_json() == {
        "srcpkg_name": "hello-client",
        "srcpkg_version": "1.0",
        "version": "1.0",
        "architecture": "all",
        "packages": ["hello-client", "hello-client-data"],
    }
    assert_data_validates(artifact)


def test_upload_from_changes(upload: BuiltUpload) -> None:
    artifact = upload_from_changes(upload.changes)

    assert artifact.category == ArtifactCategory.UPLOAD
    assert artifact.files == {path.name: path for path in upload.files()}
    data = artifact.data_json()
    assert data["type"] == "dpkg"
    assert data["changes_fields"]["Architecture"] == "source all"
    assert {entry["name"] for entry in data["changes_fields"]["Files"]} == {
        path.name for path in upload.files() if path != upload.changes
    }
    assert_data_validates(artifact)


def test_artifacts_from_changes(upload: BuiltUpload) -> None:
    artifacts = artifacts_from_changes(upload.changes)

    assert [artifact.category for artifact in artifacts] == [
        ArtifactCategory.UPLOAD,
        ArtifactCategory.SOURCE_PACKAGE,
        ArtifactCategory.BINARY_PACKAGE,
        ArtifactCategory.BINARY_PACKAGE,
        ArtifactCategory.BINARY_PACKAGES,
    ]
    packages = artifacts[-1]
    assert packages.data_json()["architecture"] == "all"
    assert set(packages.files.values()) == set(upload.debs)
    for artifact in artifacts:
        assert_data_validates(artifact)


def test_files_that_do_not_match_their_checksums_are_refused(
    upload: BuiltUpload, tmp_path: Path
) -> None:
    copy = copy_of(upload, tmp_path / "copy")
    tarball = copy.directory / "hello-client_1.0.tar.xz"
    tarball.write_bytes(tarball.read_bytes() + b"\0")

    with pytest.raises(LocalArtifactError, match="does not match the SHA-256 and size"):
        source_package_from_dsc(copy.dsc)
    with pytest.raises(LocalArtifactError, match="does not match the SHA-256 and size"):
        upload_from_changes(copy.changes)
    tarball.unlink()
    with pytest.raises(LocalArtifactError, match=r"lists hello-client_1.0.tar.xz, which is not"):
        source_package_from_dsc(copy.dsc)


def test_bad_debian_files_are_refused(upload: BuiltUpload, tmp_path: Path) -> None:
    with pytest.raises(LocalArtifactError, match="no such file"):
        source_package_from_dsc(tmp_path / "missing.dsc")
    with pytest.raises(LocalArtifactError, match=r"expected a \.deb or \.udeb file"):
        binary_package_from_deb(upload.dsc)
    text = tmp_path / "notes.dsc"
    text.write_bytes(b"\n\n")
    with pytest.raises(LocalArtifactError, match="is not a Debian control file"):
        source_package_from_dsc(text)
    no_source = tmp_path / "nosource.dsc"
    no_source.write_text("Format: 3.0 (native)\nVersion: 1\n")
    with pytest.raises(LocalArtifactError, match="has no Source field"):
        source_package_from_dsc(no_source)
    broken = tmp_path / "broken.deb"
    broken.write_bytes(b"not an ar archive")
    with pytest.raises(LocalArtifactError, match="not a readable Debian binary package"):
        binary_package_from_deb(broken)
    with pytest.raises(LocalArtifactError, match="at least one"):
        binary_packages_from_debs(
            [], srcpkg_name="a", srcpkg_version="1", version="1", architecture="all"
        )


def test_changes_whose_files_contradict_its_architecture_is_refused(
    upload: BuiltUpload, tmp_path: Path
) -> None:
    copy = copy_of(upload, tmp_path / "copy")
    text = copy.changes.read_text().replace("Architecture: source all", "Architecture: source")
    copy.changes.write_text(text)

    with pytest.raises(LocalArtifactError, match="source-only upload cannot list binaries"):
        upload_from_changes(copy.changes)


# --- Logs, tarballs and QA results --------------------------------------------------------


def test_package_build_log(tmp_path: Path) -> None:
    log = tmp_path / "hello_1.0-1_amd64.build"
    log.write_text("Status: successful\n")

    artifact = package_build_log(log, source="hello", version="1.0-1", architecture="amd64")

    assert artifact.category == ArtifactCategory.PACKAGE_BUILD_LOG
    assert artifact.files == {log.name: log}
    assert artifact.content_types == {log.name: "text/plain; charset=utf-8"}
    assert artifact.data_json() == {
        "source": "hello",
        "version": "1.0-1",
        "architecture": "amd64",
        "filename": "hello_1.0-1_amd64.build",
        "bd_uninstallable": None,
    }
    assert_data_validates(artifact)
    other = tmp_path / "build.log"
    other.write_text("")
    with pytest.raises(LocalArtifactError, match=r"expected a \.build file"):
        package_build_log(other, source="hello", version="1", architecture=None)


def tarball_data(**overrides: object) -> DebianSystemTarball:
    fields: dict[str, object] = {
        "filename": "ignored",
        "vendor": "debian",
        "codename": "bookworm",
        "mirror": "http://deb.debian.org/debian",
        "variant": None,
        "pkglist": {"base-files": "12.4+deb12u5"},
        "architecture": "amd64",
        "with_dev": True,
        "with_init": False,
    }
    fields.update(overrides)
    return DebianSystemTarball.model_validate(fields)


def test_system_tarball_takes_the_file_name(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text("ID=debian\n")
    tarball = tmp_path / "system.tar.xz"
    subprocess.run(["tar", "-C", str(tree), "-cJf", str(tarball), "."], check=True)

    artifact = system_tarball(tarball, tarball_data())

    assert artifact.category == ArtifactCategory.SYSTEM_TARBALL
    assert artifact.files == {"system.tar.xz": tarball}
    assert artifact.data_json()["filename"] == "system.tar.xz"
    assert artifact.data_json()["variant"] is None
    assert_data_validates(artifact)
    with pytest.raises(LocalArtifactError, match=r"expected a \.tar\.xz or"):
        system_tarball(tree / "etc" / "os-release", tarball_data())


def lintian_summary() -> DebianLintianSummary:
    return DebianLintianSummary.model_validate(
        {
            "tags_count_by_severity": {"error": 0, "warning": 1},
            "package_filename": {"hello": "hello_1.0-1_amd64.deb"},
            "tags_found": ["no-manual-page"],
            "overridden_tags_found": [],
            "lintian_version": "2.116.3",
            "distribution": "debian:bookworm",
        }
    )


def test_lintian_artifact_needs_its_output_and_valid_analysis(tmp_path: Path) -> None:
    output = tmp_path / "lintian.txt"
    output.write_text("W: hello: no-manual-page [usr/bin/hello]\n")
    analysis = tmp_path / "analysis.json"
    analysis.write_text(json.dumps({"tags": []}))

    artifact = lintian_artifact(
        {"lintian.txt": output, "analysis.json": analysis}, lintian_summary(), architecture="amd64"
    )

    assert artifact.category == ArtifactCategory.LINTIAN
    assert sorted(artifact.files) == ["analysis.json", "lintian.txt"]
    assert artifact.data_json()["summary"]["tags_count_by_severity"] == {
        "error": 0,
        "warning": 1,
    }
    assert artifact.data_json()["architecture"] == "amd64"
    assert_data_validates(artifact)
    with pytest.raises(LocalArtifactError, match=r"needs analysis\.json"):
        lintian_artifact({"lintian.txt": output}, lintian_summary())
    analysis.write_text("{not json")
    with pytest.raises(LocalArtifactError, match=r"analysis\.json is not valid JSON"):
        lintian_artifact({"lintian.txt": output, "analysis.json": analysis}, lintian_summary())


def test_autopkgtest_artifact_keeps_the_output_tree(tmp_path: Path) -> None:
    (tmp_path / "smoke").mkdir()
    summary = tmp_path / "summary"
    summary.write_text("smoke PASS\n")
    log = tmp_path / "smoke" / "stdout"
    log.write_text("ok\n")
    data = DebianAutopkgtest.model_validate(
        {
            "results": {"smoke": {"status": "PASS"}},
            "cmdline": "autopkgtest hello_1.0-1.dsc -- unshare",
            "source_package": {"name": "hello", "version": "1.0-1", "url": "/a/b/artifact/1/"},
            "architecture": "amd64",
            "distribution": "debian:bookworm",
        }
    )

    artifact = autopkgtest_artifact({"summary": summary, "smoke/stdout": log}, data)

    assert artifact.files == {"summary": summary, "smoke/stdout": log}
    assert artifact.data_json()["results"] == {"smoke": {"status": "PASS", "details": None}}
    assert_data_validates(artifact)
    with pytest.raises(LocalArtifactError, match="no such file"):
        autopkgtest_artifact({"log": tmp_path / "missing"}, data)
    with pytest.raises(LocalArtifactError, match=r"must not contain '\.\.' components"):
        autopkgtest_artifact({"../escape": summary}, data)


def test_local_artifact_refuses_data_of_another_category(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="must be a DebianSourcePackage"):
        LocalArtifact(ArtifactCategory.SOURCE_PACKAGE, EmptyArtifactData(), {})
