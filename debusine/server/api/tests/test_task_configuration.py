"""
Tests of `/api/1.0/task-configuration/{workspace}/{name}/`: pull (with the 0.16 entry keys
left out for older clients), push (replace, dry run, counts) and permissions.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from debusine.protocol.task_configuration import NEW_ITEM_KEYS
from debusine.server.db.models import Collection, CollectionItem, WorkspaceRoles
from debusine.testing.playground import Playground, api_client

URL = "/api/1.0/task-configuration/System/default/"
V016 = "debusine/0.16.2"
OLD = "python-requests/2.28.1"

SBUILD = {"task_type": "Worker", "task_name": "sbuild", "default_values": {"build_profiles": []}}
LINTIAN = {
    "task_type": "Worker",
    "task_name": "lintian",
    "subject": "hello",
    "context": "sid/amd64",
}
TEMPLATE = {"template": "common", "override_values": {"backend": "unshare"}}
TAGGED = {"task_type": "Worker", "task_name": "noop", "provide_tags": ["x"], "comment": "new"}


@pytest.fixture
def owner(playground: Playground) -> APIClient:
    user = playground.create_user("olivia")
    playground.grant(user, playground.workspace, WorkspaceRoles.OWNER)
    return api_client(playground.create_user_token(user))


@pytest.fixture
def collection(playground: Playground) -> Collection:
    return Collection.objects.create(
        name="default", category="debusine:task-configuration", workspace=playground.workspace
    )


def push(client: APIClient, items: list[dict[str, Any]], **fields: Any) -> Any:
    body = {
        "collection": {"id": 1, "name": "default", "data": {"git_commit": "abc"}},
        "items": items,
    }
    return client.post(URL, {**body, **fields}, format="json", HTTP_USER_AGENT=V016)


def test_push_then_pull_in_each_dialect(owner: APIClient, collection: Collection) -> None:
    pushed = push(owner, [SBUILD, LINTIAN, TEMPLATE, TAGGED])
    assert pushed.status_code == 200, pushed.content
    assert pushed.json() == {"added": 4, "updated": 0, "removed": 0, "unchanged": 0}
    names = set(
        CollectionItem.objects.filter(parent_collection=collection).values_list("name", flat=True)
    )
    assert names == {
        "Worker:sbuild::",
        "Worker:lintian:hello:sid/amd64",
        "template:common",
        "Worker:noop::",
    }

    new = owner.get(URL, HTTP_USER_AGENT=V016).json()
    assert new["collection"] == {
        "id": collection.pk,
        "name": "default",
        "data": {"git_commit": "abc"},
    }
    tagged = next(item for item in new["items"] if item["task_name"] == "noop")
    assert tagged["provide_tags"] == ["x"]
    assert set(NEW_ITEM_KEYS) <= set(tagged)

    # Debusine 0.12's client refuses the keys 0.16 added: they are left out for it.
    old = owner.get(URL, HTTP_USER_AGENT=OLD).json()
    assert len(old["items"]) == 4
    for item in old["items"]:
        assert not set(NEW_ITEM_KEYS) & set(item), item
    assert {"task_type", "default_values", "comment"} <= set(old["items"][0])


def test_push_counts_changes_and_dry_runs_change_nothing(
    owner: APIClient, collection: Collection
) -> None:
    push(owner, [SBUILD, LINTIAN, TEMPLATE])
    changed_sbuild = {**SBUILD, "default_values": {"build_profiles": ["nocheck"]}}

    dry = push(owner, [changed_sbuild, TEMPLATE, TAGGED], dry_run=True)
    assert dry.json() == {"added": 1, "updated": 1, "removed": 1, "unchanged": 1}
    assert CollectionItem.objects.filter(removed_at__isnull=True).count() == 3
    assert not CollectionItem.objects.filter(removed_at__isnull=False).exists()

    real = push(owner, [changed_sbuild, TEMPLATE, TAGGED])
    assert real.json() == {"added": 1, "updated": 1, "removed": 1, "unchanged": 1}
    active = CollectionItem.objects.filter(parent_collection=collection, removed_at__isnull=True)
    assert active.get(name="Worker:sbuild::").data["default_values"] == {
        "build_profiles": ["nocheck"]
    }
    assert not active.filter(name="Worker:lintian:hello:sid/amd64").exists()


def test_refusals(
    owner: APIClient, client: APIClient, collection: Collection, playground: Playground
) -> None:
    assert push(client, [SBUILD]).status_code == 403
    assert push(owner, [{"task_type": "Worker"}]).status_code == 400
    assert push(owner, [{**TEMPLATE, "task_name": "x"}]).status_code == 400
    assert push(owner, [{**SBUILD, "bogus": 1}]).status_code == 400
    assert push(owner, [SBUILD, SBUILD]).status_code == 400
    missing = owner.get("/api/1.0/task-configuration/System/missing/")
    assert missing.status_code == 404
    assert not CollectionItem.objects.exists()
    # Contributors may read.
    assert client.get(URL).status_code == 200
