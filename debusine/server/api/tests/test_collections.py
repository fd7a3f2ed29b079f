"""
Tests of the collection API Debusine 0.16 clients call: collections, items, token grants and
relations, with their pages, permissions, entity tags and `If-Match` preconditions.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from debusine.protocol.collections import CollectionResponse, TokenGrantResponse
from debusine.server.db.models import (
    Collection,
    CollectionItem,
    CollectionRelation,
    CollectionTokenGrant,
    ExternalToken,
    User,
    WorkspaceRoles,
    hash_token_key,
)
from debusine.testing.playground import Playground, api_client

WS = "System"
COLLECTIONS = f"/api/1.0/collection/{WS}/"
RELATIONS = f"/api/1.0/collection-relation/{WS}/"


def assert_problem(response: Any, status_code: int, title: str | None = None) -> dict[str, Any]:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    # Only the keys 0.16 clients accept (besides `status`, which this server also sends).
    assert set(body) <= {"title", "detail", "validation_errors", "status"}
    if title is not None:
        assert body["title"] == title
    return body


@pytest.fixture
def owner(playground: Playground) -> APIClient:
    user = playground.create_user("olivia")
    playground.grant(user, playground.workspace, WorkspaceRoles.OWNER)
    return api_client(playground.create_user_token(user))


@pytest.fixture
def suite(playground: Playground) -> Collection:
    return Collection.objects.create(
        name="sid",
        category="debian:suite",
        workspace=playground.workspace,
        data={"components": ["main"], "architectures": ["amd64"]},
    )


def add_item(collection: Collection, name: str, category: str, **fields: Any) -> CollectionItem:
    return CollectionItem.objects.create(
        name=name,
        child_type="b",
        category=category,
        parent_collection=collection,
        parent_category=collection.category,
        data=fields.pop("data", {"package": name.split("_")[0]}),
        **fields,
    )


def test_create_show_rename_and_delete_a_collection(
    owner: APIClient, playground: Playground
) -> None:
    created = owner.post(
        COLLECTIONS,
        {
            "name": "bookworm",
            "category": "debian:suite",
            "full_history_retention_period": 30,
            "metadata_only_retention_period": None,
            "data": {"components": ["main"]},
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    body = CollectionResponse.model_validate(created.json())
    assert (body.name, body.category, body.full_history_retention_period) == (
        "bookworm",
        "debian:suite",
        30,
    )
    scope = playground.scope.name
    assert body.links["webui_self"] == f"/{scope}/{WS}/collection/debian:suite/bookworm/"
    assert body.links["webui_category"] == {
        "href": f"/{scope}/{WS}/collection/debian:suite/",
        "type": "category",
    }

    by_name = owner.get(f"{COLLECTIONS}debian:suite/bookworm/?stats=1")
    assert by_name.status_code == 200
    assert by_name.json()["id"] == body.id
    assert by_name.json()["stats"] == []
    etag = by_name["ETag"]

    # 0.16 sends back the whole object it read, with its edits.
    changed = owner.patch(
        f"{COLLECTIONS}{body.id}/",
        {**by_name.json(), "name": "trixie", "full_history_retention_period": None},
        format="json",
        HTTP_IF_MATCH=etag,
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["name"] == "trixie"
    assert changed.json()["full_history_retention_period"] is None
    assert changed["ETag"] != etag

    # The entity tag read before the change no longer matches: 412, nothing changes.
    stale = owner.delete(f"{COLLECTIONS}{body.id}/", HTTP_IF_MATCH=etag)
    assert_problem(stale, 412, "Collection changed")
    assert Collection.objects.filter(pk=body.id).exists()

    assert owner.delete(f"{COLLECTIONS}{body.id}/").status_code == 204
    assert not Collection.objects.filter(pk=body.id).exists()


def test_list_pages_with_absolute_urls_and_hides_workflow_internal(
    owner: APIClient, playground: Playground
) -> None:
    for number in range(12):
        Collection.objects.create(
            name=f"s{number:02}", category="debian:suite", workspace=playground.workspace
        )
    Collection.objects.create(
        name="internal", category="debusine:workflow-internal", workspace=playground.workspace
    )

    first = owner.get(COLLECTIONS).json()
    assert (
        first["count"]
        == Collection.objects.exclude(category="debusine:workflow-internal")
        .filter(workspace=playground.workspace)
        .count()
    )
    assert first["next"].startswith("http://testserver/api/1.0/collection/System/?page=2")
    assert first["previous"] is None
    second = owner.get(first["next"]).json()
    assert second["next"] is None
    assert second["previous"].startswith("http://")
    names = [entry["name"] for entry in first["results"] + second["results"]]
    assert "internal" not in names
    assert [name for name in names if name.startswith("s")] == [f"s{n:02}" for n in range(12)]


def test_create_refusals(owner: APIClient, client: APIClient, suite: Collection) -> None:
    body = {"name": "sid", "category": "debian:suite", "data": {}}
    assert_problem(client.post(COLLECTIONS, body, format="json"), 403)
    assert_problem(owner.post(COLLECTIONS, body, format="json"), 400, "Cannot create collection")
    assert_problem(
        owner.post(
            COLLECTIONS, {"name": "x", "category": "debian:archive", "data": {}}, format="json"
        ),
        400,
    )
    assert_problem(
        owner.post(COLLECTIONS, {**body, "name": "new", "bogus": 1}, format="json"), 400
    )
    assert_problem(owner.get(f"{COLLECTIONS}debian:suite/missing/"), 404)
    assert_problem(api_client().get(COLLECTIONS), 403)
    assert Collection.objects.filter(name="new").count() == 0


def test_the_category_cannot_change(owner: APIClient, suite: Collection) -> None:
    response = owner.patch(
        f"{COLLECTIONS}{suite.pk}/", {"category": "debian:environments"}, format="json"
    )
    assert_problem(response, 400, "Cannot update collection")
    suite.refresh_from_db()
    assert suite.category == "debian:suite"


def test_items_list_show_filter_and_remove(
    owner: APIClient, client: APIClient, suite: Collection
) -> None:
    add_item(suite, "hello_1.0", "debian:source-package")
    add_item(suite, "hello_1.0_amd64", "debian:binary-package")
    add_item(suite, "world_2.0", "debian:source-package")
    removed = add_item(suite, "gone_1", "debian:source-package")
    removed.removed_at = removed.created_at
    removed.save()
    items = f"{COLLECTIONS}debian:suite/sid/item/"

    listed = client.get(items).json()
    assert [entry["name"] for entry in listed["results"]] == [
        "hello_1.0",
        "hello_1.0_amd64",
        "world_2.0",
    ]
    filtered = client.get(
        items, {"name__startswith": "hello_", "category": "debian:source-package"}
    ).json()
    assert [entry["name"] for entry in filtered["results"]] == ["hello_1.0"]
    assert client.get(f"{items}hello_1.0/").json() == {
        "name": "hello_1.0",
        "category": "debian:source-package",
        "data": {"package": "hello"},
    }

    assert_problem(client.delete(f"{items}hello_1.0/"), 403)
    assert owner.delete(f"{items}hello_1.0/").status_code == 204
    assert_problem(client.get(f"{items}hello_1.0/"), 404)
    # Removed items stay as history.
    assert CollectionItem.objects.filter(name="hello_1.0", removed_at__isnull=False).exists()

    stats = owner.get(f"{COLLECTIONS}{suite.pk}/?stats=1").json()["stats"]
    assert {(s["type"], s["category"], s["active"], s["count"]) for s in stats} == {
        ("bare", "debian:binary-package", True, 1),
        ("bare", "debian:source-package", True, 1),
        ("bare", "debian:source-package", False, 2),
    }


def test_token_grants(owner: APIClient, client: APIClient, playground: Playground) -> None:
    Collection.objects.create(name="_", category="debian:archive", workspace=playground.workspace)
    tokens = f"{COLLECTIONS}debian:archive/_/token/"

    assert_problem(client.post(tokens, {"role": "viewer", "username": "x"}, format="json"), 403)
    created = owner.post(
        tokens, {"comment": "CI", "role": "viewer", "username": "alice"}, format="json"
    )
    assert created.status_code == 201, created.content
    grant = TokenGrantResponse.model_validate(created.json())
    assert grant.token_type == "external-user"
    assert grant.token_key is not None
    assert grant.token_hash == hash_token_key(grant.token_key)
    # The key is shown once: only its hash is stored, and it is no API token.
    assert not ExternalToken.objects.filter(hash=grant.token_key).exists()
    assert_problem(api_client(grant.token_key).get(COLLECTIONS), 401, "Invalid token")

    # Granting an existing token again returns no key.
    suite_tokens = f"{COLLECTIONS}debian:suite/sid/token/"
    Collection.objects.create(name="sid", category="debian:suite", workspace=playground.workspace)
    again = owner.post(
        suite_tokens, {"role": "viewer", "token_hash": grant.token_hash}, format="json"
    )
    assert again.status_code == 201, again.content
    assert again.json()["token_key"] is None
    assert again.json()["username"] == "alice"

    listed = owner.get(tokens).json()
    assert [(entry["username"], entry["role"]) for entry in listed["results"]] == [
        ("alice", "viewer")
    ]
    assert_problem(owner.post(tokens, {"role": "viewer"}, format="json"), 400)
    assert_problem(owner.post(tokens, {"role": "owner", "username": "b"}, format="json"), 400)

    assert owner.delete(f"{tokens}{grant.token_hash}/viewer/").status_code == 204
    assert_problem(owner.delete(f"{tokens}{grant.token_hash}/viewer/"), 404)
    assert CollectionTokenGrant.objects.count() == 1


def test_relations_list_etag_and_if_match(owner: APIClient, playground: Playground) -> None:
    def suite(name: str) -> Collection:
        return Collection.objects.create(
            name=name, category="debian:suite", workspace=playground.workspace
        )

    sid, trixie, bookworm = suite("sid"), suite("trixie"), suite("bookworm")
    put_url = f"{RELATIONS}sid@debian:suite/suite-requires/"
    listing = {"source": "sid@debian:suite", "type": "suite-requires"}

    empty = owner.get(RELATIONS, listing)
    assert empty.json() == {"count": 0, "next": None, "previous": None, "results": []}
    etag = empty["ETag"]

    targets = [
        {"name": "trixie", "category": "debian:suite"},
        {"name": "bookworm", "category": "debian:suite"},
    ]
    replaced = owner.put(put_url, {"targets": targets}, format="json", HTTP_IF_MATCH=etag)
    assert replaced.status_code == 200, replaced.content
    assert replaced.json() == {"targets": targets}
    assert list(
        CollectionRelation.objects.filter(source=sid)
        .order_by("position")
        .values_list("target_id", "position")
    ) == [(trixie.pk, 1), (bookworm.pk, 2)]

    # The tag read before the change is stale now: 412 and nothing changes.
    stale = owner.put(put_url, {"targets": []}, format="json", HTTP_IF_MATCH=etag)
    assert_problem(stale, 412, "Collection relations changed")
    assert CollectionRelation.objects.filter(source=sid).count() == 2

    fresh = owner.get(RELATIONS, listing)
    assert fresh["ETag"] != etag
    assert [
        (entry["target_collection"]["name"], entry["position"])
        for entry in fresh.json()["results"]
    ] == [("trixie", 1), ("bookworm", 2)]
    assert owner.get(RELATIONS, {"target": "bookworm@debian:suite"}).json()["count"] == 1

    # Unordered types have no position; an unknown target or type is a 400.
    owner.put(
        f"{RELATIONS}sid@debian:suite/suite-based-on/",
        {"targets": [{"name": "trixie", "category": "debian:suite"}]},
        format="json",
    )
    assert CollectionRelation.objects.get(type="suite-based-on").position is None
    assert_problem(
        owner.put(
            put_url, {"targets": [{"name": "nope", "category": "debian:suite"}]}, format="json"
        ),
        400,
    )
    assert_problem(owner.get(RELATIONS, {"type": "bogus"}), 400)
    assert_problem(owner.get(RELATIONS, {"source": "no-category"}), 400)
    assert CollectionRelation.objects.filter(source=sid).count() == 3


def test_a_contributor_reads_but_does_not_change(
    client: APIClient, suite: Collection, user: User
) -> None:
    assert client.get(f"{COLLECTIONS}{suite.pk}/").status_code == 200
    assert_problem(client.patch(f"{COLLECTIONS}{suite.pk}/", {"name": "x"}, format="json"), 403)
    assert_problem(
        client.put(f"{RELATIONS}sid@debian:suite/suite-requires/", {"targets": []}, format="json"),
        403,
    )
    assert_problem(client.delete(f"{COLLECTIONS}{suite.pk}/"), 403)
    suite.refresh_from_db()
    assert suite.name == "sid"


def test_a_private_workspace_is_invisible(playground: Playground, outsider_token: str) -> None:
    hidden = playground.create_workspace("secret")
    Collection.objects.create(name="sid", category="debian:suite", workspace=hidden)
    response = api_client(outsider_token).get("/api/1.0/collection/secret/")
    assert_problem(response, 404)
