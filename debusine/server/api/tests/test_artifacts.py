"""Tests of artifact creation (`POST /api/1.0/artifact/`) and retrieval (`GET .../<id>/`)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, Literal

import pydantic.v1 as pydantic_v1
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from debusine.protocol.artifacts import ArtifactResponse
from debusine.server.api.errors import PROBLEM_CONTENT_TYPE
from debusine.server.db.models import (
    Artifact,
    File,
    FileInArtifact,
    Scope,
    User,
    WorkspaceRoles,
)
from debusine.testing.playground import FileSpec, Playground, api_client

CREATE_URL = "/api/1.0/artifact/"


class ClientFileResponse(pydantic_v1.BaseModel):
    """What the Debusine client (pydantic v1) requires of each file."""

    size: int
    checksums: dict[str, str]
    type: Literal["file"]
    url: pydantic_v1.AnyUrl
    content_type: str | None


class ClientArtifactResponse(pydantic_v1.BaseModel):
    """What the Debusine client (pydantic v1) requires of the Artifact object."""

    id: int
    url: str
    workspace: str
    category: str
    created_at: datetime
    data: dict[str, Any]
    download_tar_gz_url: pydantic_v1.AnyUrl
    files_to_upload: list[str]
    expire_at: datetime | None
    files: dict[str, ClientFileResponse] = {}


def file_entry(contents: bytes, content_type: str | None = None) -> dict[str, Any]:
    """The `files` entry a client sends for `contents`."""
    return {
        "size": len(contents),
        "checksums": {"sha256": hashlib.sha256(contents).hexdigest()},
        "type": "file",
        "content_type": content_type,
    }


def artifact_body(files: dict[str, bytes] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "category": "debusine:test",
        "files": {path: file_entry(contents) for path, contents in (files or {}).items()},
        "data": {},
    }
    body.update(fields)
    return body


def assert_problem(response: Any, status_code: int) -> dict[str, Any]:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["title"]
    return body


def assert_valid_artifact_json(body: dict[str, Any]) -> None:
    """Accepted by our protocol model and by the Debusine client's."""
    ArtifactResponse.model_validate(body)
    ClientArtifactResponse.parse_obj(body)


# --- Creation by users ------------------------------------------------------------------


def test_user_creates_artifact(client: APIClient, user: User, playground: Playground) -> None:
    response = client.post(
        CREATE_URL,
        artifact_body({"b.txt": b"bee", "a/a.txt": b"ay"}, data={"key": [1, 2]}),
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert_valid_artifact_json(body)
    artifact = Artifact.objects.get(pk=body["id"])
    assert artifact.created_by == user
    assert artifact.created_by_work_request is None
    assert artifact.workspace == playground.workspace
    assert body["url"] == f"/debusine/System/artifact/{artifact.pk}/"
    assert body["scope"] == "debusine"
    assert body["workspace"] == "System"
    assert body["category"] == "debusine:test"
    assert body["data"] == {"key": [1, 2]}
    assert body["created_at"].endswith("Z")
    assert body["expire_at"] is None
    assert body["files_to_upload"] == ["a/a.txt", "b.txt"]
    assert list(body["files"]) == ["a/a.txt", "b.txt"]
    assert body["files"]["b.txt"] == {
        "size": 3,
        "type": "file",
        "checksums": {"sha256": hashlib.sha256(b"bee").hexdigest()},
        "url": f"http://testserver/debusine/System/artifact/{artifact.pk}/download/b.txt",
        "content_type": None,
    }
    assert body["download_tar_gz_url"] == (
        f"http://testserver/debusine/System/artifact/{artifact.pk}/download/?archive=tar.gz"
    )
    assert set(
        FileInArtifact.objects.filter(artifact=artifact).values_list("path", "complete")
    ) == {("a/a.txt", False), ("b.txt", False)}


def test_user_creates_artifact_in_named_workspace(
    client: APIClient, user: User, playground: Playground
) -> None:
    private = playground.create_workspace("Private")
    playground.grant(user, private, WorkspaceRoles.OWNER)
    response = client.post(CREATE_URL, artifact_body(workspace="Private"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["workspace"] == "Private"
    assert Artifact.objects.get(pk=response.json()["id"]).workspace == private


def test_empty_artifact(client: APIClient) -> None:
    response = client.post(CREATE_URL, artifact_body(), format="json")
    assert response.status_code == 201
    body = response.json()
    assert_valid_artifact_json(body)
    assert body["files"] == {}
    assert body["files_to_upload"] == []


def test_content_type_is_kept(client: APIClient) -> None:
    body = artifact_body()
    body["files"]["stages.log"] = file_entry(b"log", "text/plain; charset=utf-8")
    response = client.post(CREATE_URL, body, format="json")
    assert response.status_code == 201
    assert response.json()["files"]["stages.log"]["content_type"] == "text/plain; charset=utf-8"
    assert FileInArtifact.objects.get(path="stages.log").content_type == (
        "text/plain; charset=utf-8"
    )


def test_expire_at_is_accepted_and_ignored(client: APIClient) -> None:
    response = client.post(
        CREATE_URL, artifact_body(expire_at="2030-01-01T00:00:00Z"), format="json"
    )
    assert response.status_code == 201
    assert response.json()["expire_at"] is None
    assert Artifact.objects.get().expiration_delay is None


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        ("7 00:00:00", timedelta(days=7)),
        ("1 day, 02:00:00", timedelta(days=1, hours=2)),
        ("3600", timedelta(hours=1)),
        ("01:30:00", timedelta(hours=1, minutes=30)),
        ("P2DT3H", timedelta(days=2, hours=3)),
    ],
)
def test_expiration_delay_sets_expire_at(
    client: APIClient, delay: str, expected: timedelta
) -> None:
    response = client.post(CREATE_URL, artifact_body(expiration_delay=delay), format="json")
    assert response.status_code == 201, response.content
    artifact = Artifact.objects.get()
    assert artifact.expiration_delay == expected
    expire_at = datetime.fromisoformat(response.json()["expire_at"])
    assert expire_at == artifact.created_at + expected


def test_expire_at_follows_workspace_default(client: APIClient, playground: Playground) -> None:
    playground.workspace.default_expiration_delay = timedelta(days=30)
    playground.workspace.save()
    response = client.post(CREATE_URL, artifact_body(), format="json")
    artifact = Artifact.objects.get()
    assert datetime.fromisoformat(response.json()["expire_at"]) == (
        artifact.created_at + timedelta(days=30)
    )


# --- Which files need uploading -----------------------------------------------------------


def test_empty_file_is_complete_at_once(client: APIClient) -> None:
    response = client.post(CREATE_URL, artifact_body({"empty": b"", "full": b"x"}), format="json")
    assert response.status_code == 201
    assert response.json()["files_to_upload"] == ["full"]
    assert FileInArtifact.objects.get(path="empty").complete


def test_files_over_the_size_limit_are_refused(client: APIClient, settings: Any) -> None:
    settings.DEBUSINE_MAX_FILE_SIZE = 4
    body = artifact_body({"small": b"1234", "big": b"12345", "bigger": b"123456"})

    problem = assert_problem(client.post(CREATE_URL, body, format="json"), 413)

    assert "big, bigger" in problem["detail"]
    assert set(problem["validation_errors"]) == {"files.big.size", "files.bigger.size"}
    assert not Artifact.objects.exists()
    settings.DEBUSINE_MAX_FILE_SIZE = 0
    assert client.post(CREATE_URL, body, format="json").status_code == 201


def test_file_complete_in_same_workspace_needs_no_upload(
    client: APIClient, playground: Playground
) -> None:
    playground.create_artifact(files=[FileSpec("old", b"known")], complete=True)
    response = client.post(
        CREATE_URL, artifact_body({"new": b"known", "other": b"unknown"}), format="json"
    )
    assert response.status_code == 201
    assert response.json()["files_to_upload"] == ["other"]
    new = FileInArtifact.objects.get(path="new")
    assert new.complete
    assert new.file == FileInArtifact.objects.get(path="old").file
    assert File.objects.filter(sha256=hashlib.sha256(b"known").digest()).count() == 1


def test_file_incomplete_in_same_workspace_still_needs_upload(
    client: APIClient, playground: Playground
) -> None:
    playground.create_artifact(files=[FileSpec("old", b"known")], complete=False)
    response = client.post(CREATE_URL, artifact_body({"new": b"known"}), format="json")
    assert response.json()["files_to_upload"] == ["new"]


def test_file_complete_only_in_another_workspace_needs_upload(
    client: APIClient, playground: Playground
) -> None:
    # Knowing a hash must not give access to contents held in a workspace one cannot see.
    secret = playground.create_workspace("Secret")
    playground.create_artifact(workspace=secret, files=[FileSpec("old", b"secret")], complete=True)
    response = client.post(CREATE_URL, artifact_body({"guess": b"secret"}), format="json")
    assert response.status_code == 201
    assert response.json()["files_to_upload"] == ["guess"]
    assert not FileInArtifact.objects.get(path="guess").complete


def test_same_contents_at_two_paths(client: APIClient) -> None:
    response = client.post(CREATE_URL, artifact_body({"a": b"same", "b": b"same"}), format="json")
    assert response.status_code == 201
    assert response.json()["files_to_upload"] == ["a", "b"]
    assert File.objects.count() == 1


def test_create_query_count_does_not_grow_with_files(
    client: APIClient, playground: Playground, django_assert_max_num_queries: Any
) -> None:
    # Some of the files exist already (one complete in the workspace), the rest are new.
    playground.create_artifact(files=[FileSpec("known", b"file 0")], complete=True)
    playground.create_artifact(files=[FileSpec("known", b"file 1")], complete=False)

    def create(count: int) -> int:
        files = {f"dir/file-{i}": f"file {i}".encode() for i in range(count)}
        with CaptureQueriesContext(connection) as queries:
            response = client.post(CREATE_URL, artifact_body(files), format="json")
        assert response.status_code == 201
        assert len(response.json()["files"]) == count
        return len(queries)

    create(1)  # The first request of a token also records when it was last seen.
    one = create(1)
    fifty = create(50)
    assert fifty == one
    # Scope, token, workspace, permission, then artifact, files (insert + select), complete
    # files of the workspace, files in artifact; plus the test's savepoints.
    with django_assert_max_num_queries(11):
        create(50)


# --- Creation by workers ----------------------------------------------------------------


def test_worker_creates_artifact_for_work_request(playground: Playground, user: User) -> None:
    worker, worker_token = playground.create_worker("builder")
    work_request = playground.create_work_request(created_by=user, worker=worker)
    # Workers need no role: they may create artifacts in any workspace of the scope.
    playground.create_workspace("Private")
    response = api_client(worker_token).post(
        CREATE_URL,
        artifact_body(
            {"stages.log": b"log"},
            category="debusine:work-request-debug-logs",
            workspace="Private",
            work_request=work_request.pk,
            expire_at=None,
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert_valid_artifact_json(response.json())
    artifact = Artifact.objects.get(pk=response.json()["id"])
    assert artifact.created_by_work_request == work_request
    assert artifact.created_by is None
    assert artifact.workspace.name == "Private"
    assert list(work_request.created_artifacts.all()) == [artifact]


def test_worker_without_work_request_is_refused(worker_token: str) -> None:
    response = api_client(worker_token).post(CREATE_URL, artifact_body(), format="json")
    assert_problem(response, 403)
    assert not Artifact.objects.exists()


def test_user_with_work_request_is_refused(
    client: APIClient, playground: Playground, user: User
) -> None:
    work_request = playground.create_work_request(created_by=user)
    response = client.post(CREATE_URL, artifact_body(work_request=work_request.pk), format="json")
    assert_problem(response, 403)
    assert not Artifact.objects.exists()


def test_unknown_work_request(worker_token: str) -> None:
    response = api_client(worker_token).post(
        CREATE_URL, artifact_body(work_request=999999), format="json"
    )
    body = assert_problem(response, 400)
    assert "999999" in body["title"]
    assert not Artifact.objects.exists()


def test_anonymous_cannot_create(playground: Playground) -> None:
    response = api_client().post(CREATE_URL, artifact_body(), format="json")
    assert_problem(response, 403)


def test_disabled_worker_token_cannot_create(playground: Playground, user: User) -> None:
    _, key = playground.create_worker("off", enabled=False)
    work_request = playground.create_work_request(created_by=user)
    response = api_client(key).post(
        CREATE_URL, artifact_body(work_request=work_request.pk), format="json"
    )
    assert_problem(response, 403)


# --- Workspace permissions ------------------------------------------------------------------


def test_private_workspace_is_not_found_for_outsiders(
    playground: Playground, outsider_token: str
) -> None:
    playground.create_workspace("Private")
    response = api_client(outsider_token).post(
        CREATE_URL, artifact_body(workspace="Private"), format="json"
    )
    body = assert_problem(response, 404)
    assert "Private" in body["title"]
    assert not Artifact.objects.exists()


def test_unknown_workspace(client: APIClient) -> None:
    response = client.post(CREATE_URL, artifact_body(workspace="Nowhere"), format="json")
    assert_problem(response, 404)


def test_viewer_cannot_create(playground: Playground) -> None:
    viewer = playground.create_user("viewer")
    private = playground.create_workspace("Private")
    playground.grant(viewer, private, WorkspaceRoles.VIEWER)
    response = api_client(playground.create_user_token(viewer)).post(
        CREATE_URL, artifact_body(workspace="Private"), format="json"
    )
    assert_problem(response, 403)


def test_public_workspace_needs_contributor(outsider_token: str) -> None:
    response = api_client(outsider_token).post(CREATE_URL, artifact_body(), format="json")
    assert_problem(response, 403)
    assert not Artifact.objects.exists()


def test_workspace_is_looked_up_in_request_scope(
    playground: Playground, user: User, user_token: str
) -> None:
    other = Scope.objects.create(name="other")
    elsewhere = playground.create_workspace("System", public=True, scope=other)
    playground.grant(user, elsewhere)
    response = api_client(user_token, scope="other").post(
        CREATE_URL, artifact_body(), format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["scope"] == "other"
    assert Artifact.objects.get().workspace == elsewhere


# --- Invalid requests -----------------------------------------------------------------------


def test_bad_json(client: APIClient) -> None:
    response = client.post(CREATE_URL, b"{not json", content_type="application/json")
    assert_problem(response, 400)


def test_body_must_be_an_object(client: APIClient) -> None:
    response = client.post(CREATE_URL, [1, 2], format="json")
    assert_problem(response, 400)


def test_unknown_top_level_field(client: APIClient) -> None:
    response = client.post(CREATE_URL, artifact_body(colour="red"), format="json")
    body = assert_problem(response, 400)
    assert "colour" in body["validation_errors"]


def _with_file(**entry: Any) -> dict[str, Any]:
    body = artifact_body({"f": b"contents"})
    body["files"]["f"].update(entry)
    return body


@pytest.mark.parametrize(
    ("body", "error_location"),
    [
        ({"files": {}, "data": {}}, "category"),
        (artifact_body(category=""), "category"),
        (artifact_body(category="c" * 256), "category"),
        (artifact_body(category=5), "category"),
        ({"category": "x", "data": {}}, "files"),
        ({"category": "x", "files": {}}, "data"),
        (artifact_body(data=[1]), "data"),
        (artifact_body(workspace=3), "workspace"),
        (artifact_body(work_request="12"), "work_request"),
        (artifact_body(expiration_delay="soon"), "expiration_delay"),
        (artifact_body(expiration_delay="-P1D"), "expiration_delay"),
        (artifact_body(expire_at="tomorrow"), "expire_at"),
        (_with_file(checksums={}), "files.f.checksums"),
        (_with_file(checksums={"md5": "0" * 32}), "files.f.checksums"),
        (_with_file(checksums={"sha256": "0" * 63}), "files.f.checksums"),
        (_with_file(checksums={"sha256": "g" * 64}), "files.f.checksums"),
        (_with_file(checksums={"sha256": "0" * 64, "md5": "x" * 256}), "files.f.checksums.md5"),
        (_with_file(size=-1), "files.f.size"),
        (_with_file(size=2**63), "files.f.size"),
        (_with_file(size="8"), "files.f.size"),
        (_with_file(size=True), "files.f.size"),
        (_with_file(type="directory"), "files.f.type"),
        (_with_file(content_type="t" * 256), "files.f.content_type"),
        (_with_file(mode=0o644), "files.f.mode"),
    ],
)
def test_invalid_request(client: APIClient, body: dict[str, Any], error_location: str) -> None:
    response = client.post(CREATE_URL, body, format="json")
    problem = assert_problem(response, 400)
    assert error_location in problem["validation_errors"], problem
    assert not Artifact.objects.exists()
    assert not File.objects.exists()


def test_other_checksum_algorithms_are_allowed(client: APIClient) -> None:
    body = _with_file()
    body["files"]["f"]["checksums"]["md5"] = "0" * 32
    response = client.post(CREATE_URL, body, format="json")
    assert response.status_code == 201, response.content
    # Only the SHA-256 is kept and returned, as Debusine does.
    assert response.json()["files"]["f"]["checksums"] == {
        "sha256": hashlib.sha256(b"contents").hexdigest()
    }


def test_uppercase_sha256_is_accepted(client: APIClient) -> None:
    entry = file_entry(b"x")
    entry["checksums"]["sha256"] = entry["checksums"]["sha256"].upper()
    response = client.post(CREATE_URL, artifact_body() | {"files": {"f": entry}}, format="json")
    assert response.status_code == 201
    assert response.json()["files"]["f"]["checksums"]["sha256"] == hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../escape",
        "a/../../escape",
        "a/..",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "a\\b",
        "a\x00b",
        "a\nb",
        "x" * 501,
        "",
    ],
)
def test_unsafe_paths_are_refused(client: APIClient, path: str) -> None:
    body = artifact_body({"fine": b"1"})
    body["files"][path] = file_entry(b"2")
    response = client.post(CREATE_URL, body, format="json")
    problem = assert_problem(response, 400)
    if "\x00" in path:
        # Refused by the JSON parser before validation: PostgreSQL cannot store NUL.
        assert "NUL" in problem["detail"]
    elif path:
        assert repr(path)[1:-1][:100] in problem["detail"]
    assert not Artifact.objects.exists()
    assert not FileInArtifact.objects.exists()


def test_longest_path_is_accepted(client: APIClient) -> None:
    path = "/".join(["d" * 99] * 5)
    assert len(path) == 499
    response = client.post(CREATE_URL, artifact_body({path + "x": b"1"}), format="json")
    assert response.status_code == 201, response.content


def test_wrong_content_type(client: APIClient) -> None:
    response = client.post(CREATE_URL, "category=x", content_type="text/plain")
    assert_problem(response, 415)


# --- Retrieval --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/", ""])
def test_get_artifact(client: APIClient, playground: Playground, suffix: str) -> None:
    artifact = playground.create_artifact(
        files=[FileSpec("a.txt", b"a"), FileSpec("b.txt", b"b")], data={"x": 1}
    )
    FileInArtifact.objects.filter(path="a.txt").update(complete=True)
    response = client.get(f"/api/1.0/artifact/{artifact.pk}{suffix}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert_valid_artifact_json(body)
    assert body["id"] == artifact.pk
    assert body["data"] == {"x": 1}
    assert body["files_to_upload"] == ["b.txt"]
    assert list(body["files"]) == ["a.txt", "b.txt"]


def test_get_unknown_artifact(client: APIClient) -> None:
    body = assert_problem(client.get("/api/1.0/artifact/999999/"), 404)
    assert "999999" in body["title"]


def test_anonymous_sees_public_artifacts(playground: Playground) -> None:
    artifact = playground.create_artifact()
    assert api_client().get(f"/api/1.0/artifact/{artifact.pk}/").status_code == 200


def test_private_artifact_is_hidden_from_outsiders(
    playground: Playground, outsider_token: str
) -> None:
    artifact = playground.create_artifact(workspace=playground.create_workspace("Private"))
    assert_problem(api_client().get(f"/api/1.0/artifact/{artifact.pk}/"), 404)
    assert_problem(api_client(outsider_token).get(f"/api/1.0/artifact/{artifact.pk}/"), 404)


def test_private_artifact_is_shown_to_members_and_workers(
    playground: Playground, worker_token: str
) -> None:
    private = playground.create_workspace("Private")
    artifact = playground.create_artifact(workspace=private)
    viewer = playground.create_user("viewer")
    playground.grant(viewer, private, WorkspaceRoles.VIEWER)
    for token in (playground.create_user_token(viewer), worker_token):
        response = api_client(token).get(f"/api/1.0/artifact/{artifact.pk}")
        assert response.status_code == 200, response.content
        assert response.json()["workspace"] == "Private"


def test_artifact_of_another_scope(
    playground: Playground, user_token: str, worker_token: str
) -> None:
    other = Scope.objects.create(name="other")
    artifact = playground.create_artifact(
        workspace=playground.create_workspace("Public", public=True, scope=other)
    )
    url = f"/api/1.0/artifact/{artifact.pk}/"
    assert_problem(api_client(user_token).get(url), 404)
    response = api_client(user_token, scope="other").get(url)
    assert response.status_code == 200
    assert response.json()["url"] == f"/other/Public/artifact/{artifact.pk}/"
    # Workers send no scope header and fetch whatever input they were given.
    assert api_client(worker_token).get(url).status_code == 200


def test_urls_honour_x_forwarded_proto(client: APIClient, playground: Playground) -> None:
    artifact = playground.create_artifact(files=[FileSpec("f", b"x")])
    response = client.get(
        f"/api/1.0/artifact/{artifact.pk}/",
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_HOST="localhost:8080",
    )
    body = response.json()
    base = f"https://localhost:8080/debusine/System/artifact/{artifact.pk}/download/"
    assert body["download_tar_gz_url"] == base + "?archive=tar.gz"
    assert body["files"]["f"]["url"] == base + "f"


@pytest.mark.parametrize(
    ("path", "in_url"),
    [
        ("pool/hello_1.0-1+b1_amd64.deb", "pool/hello_1.0-1+b1_amd64.deb"),
        ("hello_2:1.0~rc1.dsc", "hello_2:1.0~rc1.dsc"),
        ("with space.txt", "with%20space.txt"),
        ("odd#name?.txt", "odd%23name%3F.txt"),
        ("100%.txt", "100%25.txt"),
        ("café.txt", "caf%C3%A9.txt"),
    ],
)
def test_file_urls_quote_only_what_is_needed(
    client: APIClient, playground: Playground, path: str, in_url: str
) -> None:
    artifact = playground.create_artifact(files=[FileSpec(path, b"x")])
    body = client.get(f"/api/1.0/artifact/{artifact.pk}/").json()
    assert_valid_artifact_json(body)
    assert body["files"][path]["url"] == (
        f"http://testserver/debusine/System/artifact/{artifact.pk}/download/{in_url}"
    )


def test_get_query_count_does_not_grow_with_files(
    client: APIClient, playground: Playground
) -> None:
    def fetch(count: int) -> int:
        artifact = playground.create_artifact(
            files=[FileSpec(f"f{i}", f"{count}-{i}".encode()) for i in range(count)]
        )
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/api/1.0/artifact/{artifact.pk}/")
        assert len(response.json()["files"]) == count
        return len(queries)

    fetch(0)  # The first request of a token also records when it was last seen.
    assert fetch(1) == fetch(50)
    # Scope, token, artifact (visibility in SQL), files, and the request's savepoint + release.
    assert fetch(50) <= 6


def test_worker_get_query_count(
    playground: Playground, worker_token: str, django_assert_max_num_queries: Any
) -> None:
    artifact = playground.create_artifact(
        files=[FileSpec(f"f{i}", str(i).encode()) for i in range(50)]
    )
    client = api_client(worker_token)
    client.get(f"/api/1.0/artifact/{artifact.pk}")  # records the token's last use
    # Scope, token (its worker joined), artifact, files, and the request's savepoint + release.
    with django_assert_max_num_queries(6):
        response = client.get(f"/api/1.0/artifact/{artifact.pk}")
    assert len(response.json()["files"]) == 50
