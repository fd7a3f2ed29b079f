"""Tests of the lookup endpoints: `/api/1.0/lookup/single/` and `/api/1.0/lookup/multiple/`."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from debusine.protocol.lookups import LookupResponse, V016LookupResponse
from debusine.server.api.errors import PROBLEM_CONTENT_TYPE
from debusine.server.collections import CollectionManager
from debusine.server.db.models import Collection, CollectionItem, User, Worker, WorkRequest
from debusine.testing.playground import Playground, api_client

SINGLE_URL = "/api/1.0/lookup/single/"
MULTIPLE_URL = "/api/1.0/lookup/multiple/"
LOOKUP = "debian@debian:environments/match:codename=bookworm"


def assert_problem(response: Any, status_code: int, title: str) -> dict[str, Any]:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["title"] == title
    return body


@pytest.fixture
def worker(playground: Playground) -> Worker:
    return playground.create_connected_worker("builder")


@pytest.fixture
def worker_client(playground: Playground, worker: Worker) -> APIClient:
    return api_client(playground.worker_keys[worker.pk])


@pytest.fixture
def work_request(playground: Playground, user: User, worker: Worker) -> WorkRequest:
    return playground.create_work_request(created_by=user, worker=worker, status="running")


@pytest.fixture
def environment(playground: Playground) -> CollectionItem:
    collection = Collection.objects.create(
        name="debian", category="debian:environments", workspace=playground.workspace
    )
    tarball = playground.create_artifact(
        category="debian:system-tarball", data={"codename": "bookworm", "architecture": "amd64"}
    )
    return CollectionManager.for_collection(collection).add_artifact(tarball)


def body(work_request: WorkRequest, lookup: Any, **fields: Any) -> dict[str, Any]:
    return {"lookup": lookup, "work_request": work_request.pk, "expect_type": "artifact", **fields}


def test_single_lookup(
    worker_client: APIClient, work_request: WorkRequest, environment: CollectionItem
) -> None:
    response = worker_client.post(SINGLE_URL, body(work_request, LOOKUP), format="json")

    assert response.status_code == 200, response.content
    assert LookupResponse.model_validate(response.json()).model_dump() == {
        "result_type": "a",
        "collection_item": environment.pk,
        "artifact": environment.artifact_id,
        "collection": None,
    }


def test_single_lookup_with_default_category(
    worker_client: APIClient, work_request: WorkRequest, environment: CollectionItem
) -> None:
    response = worker_client.post(
        SINGLE_URL,
        body(
            work_request,
            "debian/match:codename=bookworm",
            default_category="debian:environments",
        ),
        format="json",
    )
    assert response.json()["artifact"] == environment.artifact_id


def test_multiple_lookup(
    worker_client: APIClient, work_request: WorkRequest, environment: CollectionItem
) -> None:
    response = worker_client.post(
        MULTIPLE_URL,
        body(work_request, [LOOKUP, {"collection": "debian@debian:environments"}]),
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json() == [
        {
            "result_type": "a",
            "collection_item": environment.pk,
            "artifact": environment.artifact_id,
            "collection": None,
        }
    ]


def test_no_matches_is_404(
    worker_client: APIClient, work_request: WorkRequest, environment: CollectionItem
) -> None:
    response = worker_client.post(
        SINGLE_URL,
        body(work_request, "debian@debian:environments/match:codename=sid"),
        format="json",
    )
    problem = assert_problem(response, 404, "No matches")
    assert "matched nothing" in problem["detail"]


def test_invalid_lookup_is_400(
    worker_client: APIClient, work_request: WorkRequest, environment: CollectionItem
) -> None:
    response = worker_client.post(
        SINGLE_URL, body(work_request, "debian@debian:environments"), format="json"
    )
    assert (
        "instead of expected 'artifact'" in assert_problem(response, 400, "Lookup error")["detail"]
    )
    response = worker_client.post(
        SINGLE_URL, body(work_request, LOOKUP, expect_type="everything"), format="json"
    )
    assert response.status_code == 400


def test_only_the_assigned_worker_may_look_up(
    playground: Playground, user: User, work_request: WorkRequest, environment: CollectionItem
) -> None:
    other = playground.create_connected_worker("other")
    response = api_client(playground.worker_keys[other.pk]).post(
        SINGLE_URL, body(work_request, LOOKUP), format="json"
    )
    assert_problem(response, 401, "Invalid work request")

    unassigned = playground.create_work_request(created_by=user)
    response = api_client(playground.worker_keys[other.pk]).post(
        MULTIPLE_URL, body(unassigned, [LOOKUP]), format="json"
    )
    assert_problem(response, 401, "Invalid work request")


def test_users_may_not_look_up(
    client: APIClient, work_request: WorkRequest, environment: CollectionItem
) -> None:
    response = client.post(SINGLE_URL, body(work_request, LOOKUP), format="json")
    assert response.status_code == 403
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE


# Debusine 0.16: a user's lookup in a workspace (`workspace` in the body)


def test_v016_single_lookup_of_an_artifact_item(
    client: APIClient, playground: Playground, environment: CollectionItem
) -> None:
    response = client.post(
        SINGLE_URL,
        {"lookup": LOOKUP, "workspace": "System", "expect_type": "artifact", "work_request": None},
        format="json",
    )

    assert response.status_code == 200, response.content
    found = V016LookupResponse.model_validate(response.json())
    scope = playground.scope.name
    assert found.result_type == "artifact"
    assert found.artifact == environment.artifact_id
    assert found.collection_item is not None
    assert (found.collection_item.name, found.collection_item.data) == (
        environment.name,
        environment.data,
    )
    assert found.parent_collection_lookup == "debian@debian:environments"
    assert found.links["webui_self"] == f"/{scope}/System/artifact/{environment.artifact_id}/"
    assert found.links["webui_parent_collection"] == (
        f"/{scope}/System/collection/debian:environments/debian/"
    )


def test_v016_lookups_of_a_collection_and_multiple(
    client: APIClient, environment: CollectionItem
) -> None:
    single = client.post(
        SINGLE_URL,
        {"lookup": "debian@debian:environments", "workspace": "System", "expect_type": "c"},
        format="json",
    )
    assert single.status_code == 200, single.content
    assert single.json()["result_type"] == "collection"
    assert single.json()["collection_info"] == {
        "name": "debian",
        "category": "debian:environments",
    }
    assert single.json()["collection_item"] is None

    multiple = client.post(
        MULTIPLE_URL,
        {"lookup": [LOOKUP], "workspace": "System", "expect_type": "artifact"},
        format="json",
    )
    assert multiple.status_code == 200, multiple.content
    assert [entry["artifact"] for entry in multiple.json()] == [environment.artifact_id]


def test_v016_lookup_errors(
    client: APIClient, worker_client: APIClient, environment: CollectionItem
) -> None:
    none = client.post(
        SINGLE_URL, {"lookup": "nothing@debian:suite", "workspace": "System"}, format="json"
    )
    assert_problem(none, 404, "No matches")
    hidden = client.post(SINGLE_URL, {"lookup": LOOKUP, "workspace": "nowhere"}, format="json")
    assert hidden.status_code == 404
    # Workspace lookups are for users; workers use the work-request shape.
    as_worker = worker_client.post(
        SINGLE_URL, {"lookup": LOOKUP, "workspace": "System"}, format="json"
    )
    assert as_worker.status_code == 403
    bad = client.post(SINGLE_URL, {"lookup": 1.5, "workspace": "System"}, format="json")
    assert_problem(bad, 400, "Cannot deserialize lookup")
