"""Validation of artifact data by category (what the server checks at artifact creation)."""

from __future__ import annotations

from typing import Any

import pytest

from debusine.artifacts import (
    ArtifactCategory,
    ArtifactDataError,
    DebianUpload,
    EmptyArtifactData,
    data_model,
    validate_artifact_data,
)


def changes_fields(architecture: str, *names: str) -> dict[str, Any]:
    return {
        "Source": "hello",
        "Version": "1.0-1",
        "Architecture": architecture,
        "Files": [{"md5sum": "0" * 32, "size": "1", "name": name} for name in names],
    }


def problems(category: str, data: Any) -> list[tuple[str, str]]:
    with pytest.raises(ArtifactDataError) as raised:
        validate_artifact_data(category, data)
    assert raised.value.category == category
    return raised.value.problems


def test_every_category_but_test_has_a_model() -> None:
    unchecked = [category for category in ArtifactCategory if data_model(category) is None]
    assert unchecked == [ArtifactCategory.TEST]
    assert data_model(ArtifactCategory.WORK_REQUEST_DEBUG_LOGS) is EmptyArtifactData
    assert data_model(ArtifactCategory.UPLOAD) is DebianUpload


def test_unknown_and_test_categories_are_stored_as_sent() -> None:
    data = {"anything": [1, {"nested": None}]}
    assert validate_artifact_data("vendor:something-new", data) is data
    assert validate_artifact_data(ArtifactCategory.TEST, data) is data
    assert problems("vendor:something-new", ["not", "an", "object"]) == [
        ("data", "must be an object")
    ]


def test_debug_logs_data_must_be_empty() -> None:
    assert validate_artifact_data(ArtifactCategory.WORK_REQUEST_DEBUG_LOGS, {}) == {}
    assert problems(ArtifactCategory.WORK_REQUEST_DEBUG_LOGS, {"log": "x"}) == [
        ("data.log", "Extra inputs are not permitted")
    ]


def test_valid_data_is_returned_as_sent() -> None:
    data = {
        "source": "hello",
        "version": "1.0-1",
        "filename": "hello_1.0-1_amd64.build",
    }
    # Defaults (architecture, bd_uninstallable) are not added to what the caller sent.
    assert validate_artifact_data(ArtifactCategory.PACKAGE_BUILD_LOG, data) == data


def test_every_problem_is_located() -> None:
    found = problems(
        ArtifactCategory.SOURCE_PACKAGE,
        {"name": 3, "type": "rpm", "dsc_fields": {}, "extra": True},
    )
    assert [location for location, _ in found] == [
        "data.name",
        "data.version",
        "data.type",
        "data.extra",
    ]
    with pytest.raises(ArtifactDataError, match=r"invalid data for debian:source-package: "):
        validate_artifact_data(ArtifactCategory.SOURCE_PACKAGE, {})


def test_nested_problems_are_located() -> None:
    found = problems(
        ArtifactCategory.AUTOPKGTEST,
        {
            "results": {"smoke": {"status": "BROKEN"}},
            "cmdline": "autopkgtest",
            "source_package": {"name": "hello", "version": "1"},
            "architecture": "amd64",
            "distribution": "debian:bookworm",
        },
    )
    assert [location for location, _ in found] == [
        "data.results.smoke.status",
        "data.source_package.url",
    ]


def test_lintian_severities_are_lintian_s() -> None:
    summary = {
        "tags_count_by_severity": {"fatal": 1},
        "package_filename": {},
        "tags_found": [],
        "overridden_tags_found": [],
        "lintian_version": "2.116.3",
        "distribution": "debian:bookworm",
    }
    [(location, _)] = problems(ArtifactCategory.LINTIAN, {"summary": summary})
    assert location == "data.summary.tags_count_by_severity.fatal.[key]"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"Architecture": "source"}, "must contain Files"),
        (changes_fields("source", "hello_1.0-1.dsc", "hello_1.0-1_amd64.deb"), "source-only"),
        (changes_fields("source amd64", "hello_1.0-1.tar.xz"), "exactly one .dsc"),
        (changes_fields("amd64", "hello_1.0-1.dsc", "hello_1.0-1_amd64.deb"), "binary-only"),
        (changes_fields("amd64", "hello_1.0-1_amd64.buildinfo"), "at least one .deb"),
        ({"Architecture": "all", "Files": "hello.deb"}, "list of objects with a name"),
        ({"Architecture": ["all"], "Files": []}, "Architecture must be a string"),
    ],
)
def test_upload_files_must_match_its_architectures(fields: dict[str, Any], message: str) -> None:
    [(location, text)] = problems(
        ArtifactCategory.UPLOAD, {"type": "dpkg", "changes_fields": fields}
    )
    assert location == "data.changes_fields"
    assert message in text


@pytest.mark.parametrize(
    "fields",
    [
        changes_fields("source", "hello_1.0-1.dsc", "hello_1.0-1.tar.xz"),
        changes_fields("source all", "hello_1.0-1.dsc", "hello_1.0-1_all.deb"),
        changes_fields("amd64", "hello_1.0-1_amd64.deb", "hello-udeb_1.0-1_amd64.udeb"),
    ],
)
def test_consistent_uploads_are_valid(fields: dict[str, Any]) -> None:
    data = {"type": "dpkg", "changes_fields": fields}
    assert validate_artifact_data(ArtifactCategory.UPLOAD, data) == data


def test_system_tarball_variant_must_be_given_even_if_null() -> None:
    data = {
        "filename": "system.tar.xz",
        "vendor": "debian",
        "codename": "bookworm",
        "mirror": "http://deb.debian.org/debian",
        "pkglist": {},
        "architecture": "amd64",
        "with_dev": True,
        "with_init": True,
    }
    assert problems(ArtifactCategory.SYSTEM_TARBALL, data) == [("data.variant", "Field required")]
    data |= {"variant": None, "components": ["main"]}
    assert validate_artifact_data(ArtifactCategory.SYSTEM_TARBALL, data) == data
