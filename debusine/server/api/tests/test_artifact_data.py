"""`POST /api/1.0/artifact/` checks the `data` of new artifacts against their category's model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from debusine.artifacts import LocalArtifact, artifacts_from_changes, file_sha256
from debusine.client.tests.debian_build import build_upload, dpkg_buildpackage_available
from debusine.server.api.tests.test_artifacts import CREATE_URL, artifact_body, assert_problem
from debusine.server.db.models import Artifact, File, User
from debusine.testing.playground import Playground, api_client


def local_artifact_body(artifact: LocalArtifact) -> dict[str, Any]:
    """The creation request for `artifact`, as a task or the client sends it."""
    return {
        "category": artifact.category,
        "data": artifact.data_json(),
        "files": {
            name: {
                "size": path.stat().st_size,
                "checksums": {"sha256": file_sha256(path)},
                "type": "file",
            }
            for name, path in artifact.files.items()
        },
    }


@pytest.mark.skipif(not dpkg_buildpackage_available(), reason="dpkg-dev is not installed")
def test_artifacts_built_from_a_real_upload_are_accepted(
    client: APIClient, tmp_path: Path
) -> None:
    upload = build_upload(tmp_path)
    artifacts = artifacts_from_changes(upload.changes)

    for artifact in artifacts:
        response = client.post(CREATE_URL, local_artifact_body(artifact), format="json")
        assert response.status_code == 201, response.content
        assert response.json()["data"] == artifact.data_json()
    assert Artifact.objects.count() == len(artifacts)


def test_invalid_data_of_a_known_category_is_refused(client: APIClient) -> None:
    body = artifact_body(
        {"hello_1.0.dsc": b"Source: hello\n"},
        category="debian:source-package",
        data={"name": "hello", "type": "rpm", "dsc_fields": {}, "unexpected": 1},
    )

    problem = assert_problem(client.post(CREATE_URL, body, format="json"), 400)

    assert problem["title"] == "Invalid artifact data"
    assert problem["validation_errors"] == {
        "data.version": ["Field required"],
        "data.type": ["Input should be 'dpkg'"],
        "data.unexpected": ["Extra inputs are not permitted"],
    }
    assert problem["detail"].startswith("Invalid data for category debian:source-package: ")
    assert "data.version: Field required" in problem["detail"]
    assert Artifact.objects.count() == 0
    assert File.objects.count() == 0


def test_rules_across_fields_are_checked(client: APIClient) -> None:
    changes_fields = {
        "Architecture": "source",
        "Files": [{"name": "hello_1.0.dsc"}, {"name": "hello_1.0_amd64.deb"}],
    }
    body = artifact_body(
        category="debian:upload", data={"type": "dpkg", "changes_fields": changes_fields}
    )

    problem = assert_problem(client.post(CREATE_URL, body, format="json"), 400)

    [message] = problem["validation_errors"]["data.changes_fields"]
    assert "source-only upload cannot list binaries" in message
    assert Artifact.objects.count() == 0


def test_valid_data_is_stored_as_sent(client: APIClient) -> None:
    data = {"source": "hello", "version": "1.0-1", "filename": "hello_1.0-1_amd64.build"}
    body = artifact_body(category="debian:package-build-log", data=data)

    response = client.post(CREATE_URL, body, format="json")

    assert response.status_code == 201, response.content
    assert Artifact.objects.get().data == data


def test_unknown_categories_keep_any_data(client: APIClient) -> None:
    data = {"anything": {"goes": [1, 2]}}
    response = client.post(
        CREATE_URL, artifact_body(category="vendor:new-kind", data=data), format="json"
    )

    assert response.status_code == 201, response.content
    assert Artifact.objects.get().data == data


def test_debug_logs_take_empty_data_only(playground: Playground, user: User) -> None:
    worker, worker_token = playground.create_worker()
    work_request = playground.create_work_request(created_by=user, worker=worker)
    body = artifact_body(
        {"stages.log": b"log"},
        category="debusine:work-request-debug-logs",
        work_request=work_request.pk,
        data={"note": "not allowed"},
    )

    problem = assert_problem(api_client(worker_token).post(CREATE_URL, body, format="json"), 400)

    assert problem["validation_errors"] == {"data.note": ["Extra inputs are not permitted"]}
    body["data"] = {}
    response = api_client(worker_token).post(CREATE_URL, body, format="json")
    assert response.status_code == 201, response.content
