"""
The artifact wire models: safe artifact paths, strict creation requests (checksums, sizes,
expiration delays), and the Artifact object as our server sends it and as our client reads
it from any compatible server.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from debusine.protocol.artifacts import (
    MAX_DURATION,
    MAX_PATH_LENGTH,
    ArtifactCreateRequest,
    ArtifactRelationType,
    ArtifactResponse,
    FileRequest,
    FileResponse,
    LenientArtifactResponse,
    RelationCreateRequest,
    check_artifact_path,
    parse_duration,
    quote_artifact_path,
)

SHA256 = "ab" * 32


def file_request(**fields: Any) -> dict[str, Any]:
    return {"size": 3, "checksums": {"sha256": SHA256}, "type": "file", **fields}


def our_artifact(**fields: Any) -> dict[str, Any]:
    """The Artifact object as our server sends it."""
    return {
        "id": 7,
        "url": "/debusine/System/artifact/7/",
        "scope": "debusine",
        "workspace": "System",
        "category": "debusine:test",
        "data": {},
        "created_at": "2025-03-01T10:00:00Z",
        "expire_at": None,
        "download_tar_gz_url": "http://h/debusine/System/artifact/7/download/?archive=tar.gz",
        "files_to_upload": ["a.txt"],
        "files": {
            "a.txt": {
                "size": 3,
                "checksums": {"sha256": SHA256},
                "type": "file",
                "url": "http://h/debusine/System/artifact/7/download/a.txt",
                "content_type": None,
            }
        },
        **fields,
    }


@pytest.mark.parametrize(
    "path", ["hello_1.0-1+b1_amd64.deb", "a/b~c.log", "dir/sub/file name.txt", "ünï.txt"]
)
def test_ordinary_paths_are_accepted_unchanged(path: str) -> None:
    assert check_artifact_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("a/../../b", "'..'"),
        ("./a", "'.'"),
        ("a//b", "empty components"),
        ("a/", "empty components"),
        ("a\\b", "backslashes"),
        ("a\nb", "control characters"),
        ("a\0b", "control characters"),
        ("x" * (MAX_PATH_LENGTH + 1), "longer than"),
    ],
)
def test_paths_that_could_escape_or_confuse_are_refused(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_artifact_path(path)


def test_quoting_keeps_debian_names_and_encodes_what_breaks_a_url() -> None:
    assert quote_artifact_path("pool/hello_1.0-1+b1_amd64.deb") == "pool/hello_1.0-1+b1_amd64.deb"
    assert quote_artifact_path("a b/100%?#.txt") == "a%20b/100%25%3F%23.txt"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"checksums": {"md5": "00"}}, "must include 'sha256'"),
        ({"checksums": {"sha256": "zz" * 32}}, "64 hexadecimal"),
        ({"checksums": {"sha256": SHA256[:-2]}}, "64 hexadecimal"),
        ({"size": -1}, "size"),
        ({"size": "3"}, "size"),  # strict: no coercion of strings
        ({"type": "directory"}, "type"),
        ({"mode": 0o644}, "mode"),  # unknown key
    ],
)
def test_file_requests_are_strict(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        FileRequest.model_validate(file_request(**fields))


def test_a_file_request_gives_its_digest_as_bytes() -> None:
    assert FileRequest.model_validate(file_request()).sha256 == bytes.fromhex(SHA256)


def test_a_debusine_0_11_creation_request_without_content_type_is_accepted() -> None:
    request = ArtifactCreateRequest.model_validate(
        {
            "category": "debusine:test",
            "workspace": "System",
            "files": {"a.txt": file_request()},
            "data": {},
            "work_request": None,
            "expire_at": None,
        }
    )

    assert request.files["a.txt"].content_type is None
    assert request.expiration_delay is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"files": {"../a": file_request()}}, "'..'"),
        ({"category": ""}, "category"),
        ({"work_request": "1"}, "work_request"),
        ({"flavour": "x"}, "flavour"),
    ],
)
def test_creation_requests_are_strict(body: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        ArtifactCreateRequest.model_validate(
            {"category": "debusine:test", "files": {}, "data": {}, **body}
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7 00:00:00", timedelta(days=7)),
        ("1 day, 02:00:00", timedelta(days=1, hours=2)),
        ("3600", timedelta(hours=1)),
        ("01:30", timedelta(minutes=1, seconds=30)),
        ("0.5", timedelta(milliseconds=500)),
        ("P7D", timedelta(days=7)),
        (None, None),
    ],
)
def test_expiration_delays_in_the_forms_servers_print(
    text: str | None, expected: timedelta | None
) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("-P1D", "negative"),
        (f"{MAX_DURATION.days + 1} 00:00:00", "at most"),
        ("99999999999 00:00:00", "at most"),
        (3600, "duration string"),
        ("soon", "valid timedelta"),
    ],
)
def test_bad_expiration_delays_are_refused(value: Any, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        ArtifactCreateRequest.model_validate(
            {"category": "c", "files": {}, "data": {}, "expiration_delay": value}
        )


def test_our_artifact_round_trips_through_json() -> None:
    parsed = ArtifactResponse.model_validate(our_artifact())

    assert ArtifactResponse.model_validate_json(parsed.model_dump_json()) == parsed
    assert isinstance(parsed.files["a.txt"], FileResponse)


@pytest.mark.parametrize(
    "url", ["/debusine/System/artifact/7/download/", "http://h/a b", "ftp://h/x"]
)
def test_download_urls_must_be_absolute_http_urls(url: str) -> None:
    with pytest.raises(ValidationError, match=r"absolute http|whitespace"):
        ArtifactResponse.model_validate(our_artifact(download_tar_gz_url=url))


def test_the_strict_artifact_requires_scope_and_url() -> None:
    answer = our_artifact()
    del answer["scope"]

    with pytest.raises(ValidationError, match="scope"):
        ArtifactResponse.model_validate(answer)


def test_the_lenient_artifact_accepts_debusine_0_11_answers_and_newer_keys() -> None:
    answer = our_artifact(links={"webui_self": "/x/"})
    for key in ("url", "scope", "expire_at"):
        del answer[key]
    del answer["files"]["a.txt"]["content_type"]
    answer["files"]["a.txt"]["links"] = {}

    parsed = LenientArtifactResponse.model_validate(answer)

    assert (parsed.url, parsed.scope, parsed.expire_at) == (None, None, None)
    assert parsed.files["a.txt"].content_type is None
    # `links` is part of the Artifact object now (our server sends it too), not of files.
    assert parsed.model_dump()["links"] == {"webui_self": "/x/"}
    assert "links" not in parsed.model_dump()["files"]["a.txt"]


def test_the_lenient_artifact_defaults_to_no_files() -> None:
    answer = our_artifact()
    del answer["files"]

    assert LenientArtifactResponse.model_validate(answer).files == {}


def test_relation_requests_accept_only_known_types() -> None:
    request = RelationCreateRequest.model_validate({"artifact": 1, "target": 2, "type": "extends"})
    assert request.type is ArtifactRelationType.EXTENDS

    with pytest.raises(ValidationError, match="type"):
        RelationCreateRequest.model_validate({"artifact": 1, "target": 2, "type": "depends"})
