"""Tests of relations between artifacts: `/api/1.0/artifact-relation/`."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from debusine.protocol.artifacts import RelationResponse
from debusine.server.api.errors import PROBLEM_CONTENT_TYPE
from debusine.server.db.models import (
    Artifact,
    ArtifactRelation,
    User,
    Workspace,
    WorkspaceRoles,
)
from debusine.testing.playground import FileSpec, Playground, api_client

RELATIONS_URL = "/api/1.0/artifact-relation/"


def assert_problem(response: Any, status_code: int) -> dict[str, Any]:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["title"]
    return body


def relation_body(source: Artifact, target: Artifact, type: str = "relates-to") -> dict[str, Any]:
    return {"artifact": source.pk, "target": target.pk, "type": type}


@pytest.fixture
def private(playground: Playground) -> Workspace:
    return playground.create_workspace("Private")


@pytest.fixture
def source(playground: Playground) -> Artifact:
    return playground.create_artifact(files=[FileSpec("out", b"out")], complete=True)


@pytest.fixture
def target(playground: Playground) -> Artifact:
    return playground.create_artifact(files=[FileSpec("in", b"in")], complete=True)


# --- Creation --------------------------------------------------------------------------------


def test_create_relation_then_get_it_again(
    client: APIClient, source: Artifact, target: Artifact
) -> None:
    response = client.post(RELATIONS_URL, relation_body(source, target), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    RelationResponse.model_validate(body)
    relation = ArtifactRelation.objects.get()
    assert body == {
        "id": relation.pk,
        "artifact": source.pk,
        "target": target.pk,
        "type": "relates-to",
    }

    again = client.post(RELATIONS_URL, relation_body(source, target), format="json")
    assert again.status_code == 200
    assert again.json() == body
    assert ArtifactRelation.objects.count() == 1


def test_each_type_is_its_own_relation(
    client: APIClient, source: Artifact, target: Artifact
) -> None:
    for relation_type in ("extends", "relates-to", "built-using"):
        response = client.post(
            RELATIONS_URL, relation_body(source, target, relation_type), format="json"
        )
        assert response.status_code == 201
        assert response.json()["type"] == relation_type
    assert ArtifactRelation.objects.count() == 3


def worker_output(playground: Playground, workspace: Workspace) -> tuple[Artifact, str]:
    """An artifact created by a work request of a worker, and that worker's token key."""
    worker, key = playground.create_worker("builder")
    creator = playground.create_user("creator")
    work_request = playground.create_work_request(
        created_by=creator, workspace=workspace, worker=worker
    )
    output = playground.create_artifact(
        workspace=workspace, category="debug-logs", created_by_work_request=work_request
    )
    return output, key


def test_worker_relates_its_output_in_any_workspace(
    playground: Playground, private: Workspace, target: Artifact
) -> None:
    output, key = worker_output(playground, private)
    response = api_client(key).post(RELATIONS_URL, relation_body(output, target), format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("producer", ["user", "other worker"])
def test_worker_cannot_relate_artifacts_it_did_not_create(
    playground: Playground, user: User, target: Artifact, producer: str
) -> None:
    _, key = playground.create_worker("intruder")
    if producer == "user":
        source = playground.create_artifact(created_by=user)
    else:
        source, _ = worker_output(playground, playground.workspace)
    response = api_client(key).post(RELATIONS_URL, relation_body(source, target), format="json")
    assert_problem(response, 403)
    assert not ArtifactRelation.objects.exists()


def test_artifact_with_no_files_is_complete(
    client: APIClient, playground: Playground, target: Artifact
) -> None:
    empty = playground.create_artifact()
    response = client.post(RELATIONS_URL, relation_body(empty, target), format="json")
    assert response.status_code == 201


@pytest.mark.parametrize("incomplete_end", ["artifact", "target"])
def test_incomplete_artifacts_cannot_be_related(
    client: APIClient, playground: Playground, target: Artifact, incomplete_end: str
) -> None:
    incomplete = playground.create_artifact(files=[FileSpec("f", b"f")], complete=False)
    ends = (incomplete, target) if incomplete_end == "artifact" else (target, incomplete)
    response = client.post(RELATIONS_URL, relation_body(*ends), format="json")
    body = assert_problem(response, 400)
    assert str(incomplete.pk) in body["detail"]
    assert not ArtifactRelation.objects.exists()


@pytest.mark.parametrize("hidden_end", ["artifact", "target"])
def test_invisible_artifacts_are_not_found(
    playground: Playground,
    outsider_token: str,
    private: Workspace,
    source: Artifact,
    hidden_end: str,
) -> None:
    hidden = playground.create_artifact(workspace=private)
    ends = (hidden, source) if hidden_end == "artifact" else (source, hidden)
    # The outsider may not add to System either; visibility is checked first.
    response = api_client(outsider_token).post(RELATIONS_URL, relation_body(*ends), format="json")
    body = assert_problem(response, 404)
    assert str(hidden.pk) in body["title"]
    assert not ArtifactRelation.objects.exists()


def test_unknown_artifact(client: APIClient, source: Artifact) -> None:
    response = client.post(
        RELATIONS_URL,
        {"artifact": source.pk, "target": 999999, "type": "extends"},
        format="json",
    )
    assert_problem(response, 404)


def test_user_needs_to_contribute_to_source_workspace(
    outsider_token: str, source: Artifact, target: Artifact
) -> None:
    response = api_client(outsider_token).post(
        RELATIONS_URL, relation_body(source, target), format="json"
    )
    assert_problem(response, 403)
    assert not ArtifactRelation.objects.exists()


def test_anonymous_cannot_create(
    playground: Playground, source: Artifact, target: Artifact
) -> None:
    response = api_client().post(RELATIONS_URL, relation_body(source, target), format="json")
    assert_problem(response, 403)


def test_artifact_cannot_relate_to_itself(client: APIClient, source: Artifact) -> None:
    response = client.post(RELATIONS_URL, relation_body(source, source), format="json")
    assert_problem(response, 400)


@pytest.mark.parametrize(
    ("changes", "error_location"),
    [
        ({"type": "depends-on"}, "type"),
        ({"colour": "red"}, "colour"),
        ({"artifact": "1"}, "artifact"),
        ({"target": None}, "target"),
        ({"type": None}, "type"),
    ],
)
def test_invalid_create_request(
    client: APIClient,
    source: Artifact,
    target: Artifact,
    changes: dict[str, Any],
    error_location: str,
) -> None:
    response = client.post(RELATIONS_URL, relation_body(source, target) | changes, format="json")
    body = assert_problem(response, 400)
    assert error_location in body["validation_errors"]
    assert not ArtifactRelation.objects.exists()


def test_missing_field(client: APIClient, source: Artifact) -> None:
    response = client.post(
        RELATIONS_URL, {"artifact": source.pk, "type": "extends"}, format="json"
    )
    assert "target" in assert_problem(response, 400)["validation_errors"]


def test_bad_json(client: APIClient) -> None:
    response = client.post(RELATIONS_URL, b"[", content_type="application/json")
    assert_problem(response, 400)


# --- Listing ---------------------------------------------------------------------------------


def relate(source: Artifact, target: Artifact, type: str = "relates-to") -> ArtifactRelation:
    return ArtifactRelation.objects.create(artifact=source, target=target, type=type)


def test_list_by_artifact_and_by_target(
    playground: Playground, source: Artifact, target: Artifact
) -> None:
    other = playground.create_artifact()
    first = relate(source, target)
    second = relate(source, other, "extends")
    relate(other, target)

    response = api_client().get(RELATIONS_URL, {"artifact": source.pk})
    assert response.status_code == 200
    assert response.json() == [
        {"id": first.pk, "artifact": source.pk, "target": target.pk, "type": "relates-to"},
        {"id": second.pk, "artifact": source.pk, "target": other.pk, "type": "extends"},
    ]
    for relation in response.json():
        RelationResponse.model_validate(relation)

    by_target = api_client().get(RELATIONS_URL, {"target_artifact": target.pk})
    assert [relation["artifact"] for relation in by_target.json()] == [source.pk, other.pk]


def test_list_of_artifact_without_relations(source: Artifact) -> None:
    response = api_client().get(RELATIONS_URL, {"artifact": source.pk})
    assert response.status_code == 200
    assert response.json() == []


def test_list_hides_relations_to_invisible_artifacts(
    playground: Playground, private: Workspace, source: Artifact, worker_token: str
) -> None:
    hidden = playground.create_artifact(workspace=private)
    relate(source, hidden)
    relate(hidden, source)
    assert api_client().get(RELATIONS_URL, {"artifact": source.pk}).json() == []
    assert api_client().get(RELATIONS_URL, {"target_artifact": source.pk}).json() == []
    # Workers see everything.
    assert len(api_client(worker_token).get(RELATIONS_URL, {"artifact": source.pk}).json()) == 1


def test_list_of_invisible_artifact_is_not_found(
    playground: Playground, private: Workspace, outsider_token: str
) -> None:
    hidden = playground.create_artifact(workspace=private)
    assert_problem(api_client(outsider_token).get(RELATIONS_URL, {"artifact": hidden.pk}), 404)
    assert_problem(api_client().get(RELATIONS_URL, {"target_artifact": hidden.pk}), 404)
    assert_problem(api_client().get(RELATIONS_URL, {"artifact": 999999}), 404)


def test_list_needs_a_parameter(playground: Playground) -> None:
    assert_problem(api_client().get(RELATIONS_URL), 400)


def test_list_parameter_must_be_an_id(playground: Playground) -> None:
    assert_problem(api_client().get(RELATIONS_URL, {"artifact": "x"}), 400)


def test_list_query_count_does_not_grow_with_relations(
    playground: Playground, source: Artifact, django_assert_max_num_queries: Any
) -> None:
    targets = [playground.create_artifact() for _ in range(20)]
    for target in targets:
        relate(source, target)
    # Scope, the relations (visibility in SQL), the artifact's own visibility, and the
    # request transaction's savepoint and release.
    with django_assert_max_num_queries(5):
        response = api_client().get(RELATIONS_URL, {"artifact": source.pk})
    assert len(response.json()) == 20


# --- Deletion --------------------------------------------------------------------------------


def test_delete_relation(client: APIClient, source: Artifact, target: Artifact) -> None:
    relation = relate(source, target)
    response = client.delete(f"{RELATIONS_URL}{relation.pk}/")
    assert response.status_code == 204
    assert response.content == b""
    assert not ArtifactRelation.objects.exists()


def test_worker_deletes_relation_of_its_output(
    playground: Playground, private: Workspace, target: Artifact
) -> None:
    output, key = worker_output(playground, private)
    relation = relate(output, target)
    response = api_client(key).delete(f"{RELATIONS_URL}{relation.pk}/")
    assert response.status_code == 204
    assert response.content == b""
    assert not ArtifactRelation.objects.exists()


def test_worker_cannot_delete_relations_of_others(
    worker_token: str, playground: Playground, source: Artifact, target: Artifact
) -> None:
    relation = relate(source, target)
    assert_problem(api_client(worker_token).delete(f"{RELATIONS_URL}{relation.pk}/"), 403)
    assert ArtifactRelation.objects.exists()


def test_delete_needs_to_contribute_to_source_workspace(
    outsider_token: str, source: Artifact, target: Artifact
) -> None:
    relation = relate(source, target)
    assert_problem(api_client(outsider_token).delete(f"{RELATIONS_URL}{relation.pk}/"), 403)
    assert ArtifactRelation.objects.exists()


def test_delete_needs_a_token(playground: Playground, source: Artifact, target: Artifact) -> None:
    relation = relate(source, target)
    assert_problem(api_client().delete(f"{RELATIONS_URL}{relation.pk}/"), 403)
    assert ArtifactRelation.objects.exists()


def test_delete_relation_to_invisible_artifact_is_not_found(
    playground: Playground, user: User, private: Workspace, source: Artifact
) -> None:
    # Alice contributes to System but cannot see Private.
    relation = relate(source, playground.create_artifact(workspace=private))
    response = api_client(playground.create_user_token(user)).delete(
        f"{RELATIONS_URL}{relation.pk}/"
    )
    assert_problem(response, 404)
    assert ArtifactRelation.objects.exists()


def test_delete_unknown_relation(client: APIClient) -> None:
    assert_problem(client.delete(f"{RELATIONS_URL}999999/"), 404)


def test_viewer_of_private_source_cannot_delete(
    playground: Playground, private: Workspace, target: Artifact
) -> None:
    viewer = playground.create_user("viewer")
    playground.grant(viewer, private, WorkspaceRoles.VIEWER)
    relation = relate(playground.create_artifact(workspace=private), target)
    response = api_client(playground.create_user_token(viewer)).delete(
        f"{RELATIONS_URL}{relation.pk}/"
    )
    assert_problem(response, 403)
