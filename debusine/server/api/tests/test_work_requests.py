"""
Tests of the work-request API: create, list (paginated), read, re-prioritise, retry, abort,
manual unblock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from debusine.protocol.work_requests import WorkRequestPage, WorkRequestResponse
from debusine.server.db.models import (
    Scope,
    Token,
    User,
    WorkRequest,
    WorkRequestStatus,
    Workspace,
    WorkspaceRoles,
)
from debusine.server.metrics.events import redis_client
from debusine.server.work_requests import live_logs, transitions
from debusine.server.work_requests.transitions import InvalidWorkRequestError
from debusine.tasks import BaseTask, BaseTaskData, TaskType
from debusine.testing.playground import Playground, api_client

LIST_URL = "/api/1.0/work-request/"


def detail_url(work_request: WorkRequest | int) -> str:
    pk = work_request if isinstance(work_request, int) else work_request.pk
    return f"/api/1.0/work-request/{pk}/"


def assert_problem(response: Any, status_code: int, title: str | None = None) -> dict[str, Any]:
    """The response is a problem document with that status (and title, when given)."""
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert isinstance(body["title"], str)
    if title is not None:
        assert body["title"] == title
    return body


@pytest.fixture
def private(playground: Playground) -> Workspace:
    """A private workspace of the default scope nobody has a role on yet."""
    return playground.create_workspace("private")


@pytest.fixture
def outsider(playground: Playground) -> tuple[User, str]:
    """A user with no role anywhere, and their token."""
    outsider = playground.create_user("mallory")
    return outsider, playground.create_user_token(outsider)


# --- Create ---------------------------------------------------------------------------------


def test_create_noop_answers_200_with_the_new_work_request(client: APIClient, user: User) -> None:
    response = client.post(
        LIST_URL,
        {"task_name": "noop", "task_data": {"result": True}, "event_reactions": {}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    work_request = WorkRequest.objects.get()
    assert body == {
        "id": work_request.pk,
        "url": f"/debusine/System/work-request/{work_request.pk}/",
        "task_name": "noop",
        "created_at": work_request.created_at.isoformat().replace("+00:00", "Z"),
        "created_by": user.pk,
        "aborted_by": None,
        "started_at": None,
        "completed_at": None,
        "duration": None,
        "worker": None,
        "task_type": "Worker",
        "task_data": {"result": True},
        "dynamic_task_data": None,
        "output_data": None,
        "priority_base": 0,
        "priority_adjustment": 0,
        "workflow_data": {},
        "event_reactions": {},
        "parent": None,
        "status": "pending",
        "result": "",
        "artifacts": [],
        "scope": "debusine",
        "workspace": "System",
        "links": {"webui_self": f"/debusine/System/work-request/{work_request.pk}/"},
    }
    assert body["created_at"].endswith("Z")
    WorkRequestResponse.model_validate(body)
    assert work_request.created_by == user
    assert work_request.task_data == {"result": True}


def test_create_costs_three_queries(client: APIClient) -> None:
    body = {"task_name": "noop", "task_data": {}}
    client.post(LIST_URL, body, format="json")  # the token's last use is now recorded

    with CaptureQueriesContext(connection) as captured:
        assert client.post(LIST_URL, body, format="json").status_code == 200

    # The token; the workspace with its scope and the caller's permissions; the INSERT.
    statements = [
        query["sql"]
        for query in captured.captured_queries
        if not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
    ]
    assert len(statements) == 3, statements


def test_create_normalises_task_data_and_accepts_null_event_reactions(
    client: APIClient,
) -> None:
    response = client.post(
        LIST_URL,
        {"task_name": "sleep", "task_data": {"seconds": "3"}, "event_reactions": None},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["task_data"] == {"seconds": 3}
    assert WorkRequest.objects.get().task_data == {"seconds": 3}


def test_create_in_a_named_private_workspace(
    client: APIClient, playground: Playground, user: User, private: Workspace
) -> None:
    playground.grant(user, private, WorkspaceRoles.CONTRIBUTOR)
    response = client.post(
        LIST_URL, {"task_name": "noop", "task_data": {}, "workspace": "private"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["workspace"] == "private"
    assert WorkRequest.objects.get().workspace == private


def test_create_uses_the_scope_of_the_request(
    playground: Playground, user: User, user_token: str
) -> None:
    other = Scope.objects.create(name="other")
    workspace = playground.create_workspace("System", scope=other, public=True)
    playground.grant(user, workspace)
    response = api_client(user_token, scope="other").post(
        LIST_URL, {"task_name": "noop", "task_data": {}}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["url"].startswith("/other/System/work-request/")
    assert WorkRequest.objects.get().workspace == workspace


@pytest.mark.parametrize(
    ("body", "title"),
    [
        ({"task_name": "noop", "task_data": {}, "foo": 1, "bar": 2}, "Invalid fields: bar, foo"),
        ({"task_name": "noop"}, "Invalid request"),
        ({"task_name": "noop", "task_data": None}, "Invalid request"),
        ({"task_name": "noop", "task_data": []}, "Invalid request"),
        ({"task_name": 3, "task_data": {}}, "Invalid request"),
        ({"task_name": "noop", "task_data": {}, "workspace": 7}, "Invalid request"),
        ([{"task_name": "noop"}], "Invalid request"),
        ("noop", "Invalid request"),
    ],
)
def test_create_rejects_malformed_bodies(client: APIClient, body: Any, title: str) -> None:
    response = client.post(LIST_URL, body, format="json")
    assert_problem(response, 400, title)
    assert not WorkRequest.objects.exists()


def test_create_rejects_a_body_that_is_not_json(client: APIClient) -> None:
    response = client.post(LIST_URL, "{not json", content_type="application/json")
    assert_problem(response, 400, "Cannot parse the request body")
    assert not WorkRequest.objects.exists()


def test_create_rejects_unregistered_task_names(client: APIClient) -> None:
    response = client.post(LIST_URL, {"task_name": "nosuchtask", "task_data": {}}, format="json")
    body = assert_problem(response, 400, "Cannot create work request")
    assert "task name is not registered" in body["detail"]
    assert body["validation_errors"] == {"task_name": ["task name is not registered"]}
    assert not WorkRequest.objects.exists()


def test_create_rejects_invalid_task_data(client: APIClient) -> None:
    response = client.post(
        LIST_URL, {"task_name": "noop", "task_data": {"foo": "bar"}}, format="json"
    )
    body = assert_problem(response, 400, "Cannot create work request")
    assert "foo: Extra inputs are not permitted" in body["detail"]
    assert body["validation_errors"] == {"task_data.foo": ["Extra inputs are not permitted"]}
    assert not WorkRequest.objects.exists()


def test_create_refuses_task_data_out_of_bounds_with_the_reason(client: APIClient) -> None:
    # A sleep the worker could not run (time.sleep overflows) is refused at creation.
    response = client.post(
        LIST_URL, {"task_name": "sleep", "task_data": {"seconds": 10**30}}, format="json"
    )
    body = assert_problem(response, 400, "Cannot create work request")
    assert "seconds: Input should be less than or equal to 604800" in body["detail"]
    assert body["validation_errors"] == {
        "task_data.seconds": ["Input should be less than or equal to 604800"]
    }
    assert not WorkRequest.objects.exists()


@pytest.mark.parametrize(
    ("event_reactions", "expected"),
    [
        (
            {"on_success": [{"action": "send-notification", "channel": "admins"}]},
            "notification channel(s) not found: 'admins'",
        ),
        ({"on_failure": [{"action": "update-collection"}]}, "invalid event reactions"),
        ({"on_something": []}, "invalid event reactions"),
    ],
)
def test_create_rejects_event_reactions(
    client: APIClient, event_reactions: Any, expected: str
) -> None:
    response = client.post(
        LIST_URL,
        {"task_name": "noop", "task_data": {}, "event_reactions": event_reactions},
        format="json",
    )
    body = assert_problem(response, 400, "Cannot create work request")
    assert expected in body["detail"]
    assert not WorkRequest.objects.exists()


def test_create_in_unknown_or_hidden_workspace_is_404(
    client: APIClient, private: Workspace
) -> None:
    for name in ("nosuchworkspace", "private"):
        response = client.post(
            LIST_URL, {"task_name": "noop", "task_data": {}, "workspace": name}, format="json"
        )
        assert_problem(response, 404, f"Workspace {name} not found")
    assert not WorkRequest.objects.exists()


def test_create_needs_contributor_role(
    playground: Playground, outsider: tuple[User, str], private: Workspace
) -> None:
    user, token = outsider
    # System is public: visible, but seeing is not contributing.
    response = api_client(token).post(
        LIST_URL, {"task_name": "noop", "task_data": {}}, format="json"
    )
    assert_problem(response, 403, "Permission denied")
    playground.grant(user, private, WorkspaceRoles.VIEWER)
    response = api_client(token).post(
        LIST_URL, {"task_name": "noop", "task_data": {}, "workspace": "private"}, format="json"
    )
    assert_problem(response, 403, "Permission denied")
    assert not WorkRequest.objects.exists()


def disabled_token(playground: Playground, user: User) -> str:
    return playground.create_user_token(user, enabled=False)


def expired_token(playground: Playground, user: User) -> str:
    _, key = Token.objects.create_with_key(
        user=user, enabled=True, expire_at=timezone.now() - timedelta(minutes=1)
    )
    return key


@pytest.mark.parametrize("kind", ["none", "worker", "disabled", "expired", "unknown"])
def test_create_needs_an_enabled_user_token(
    playground: Playground, user: User, worker_token: str, kind: str
) -> None:
    token = {
        "none": None,
        "worker": worker_token,
        "disabled": disabled_token(playground, user),
        "expired": expired_token(playground, user),
        "unknown": "0" * 64,
    }[kind]
    response = api_client(token).post(
        LIST_URL, {"task_name": "noop", "task_data": {}}, format="json"
    )
    status_code, title = {
        "none": (403, "Error"),
        "worker": (403, "Error"),
        "disabled": (403, "Token disabled"),
        "expired": (401, "Token expired"),
        "unknown": (401, "Invalid token"),
    }[kind]
    assert_problem(response, status_code, title)
    assert not WorkRequest.objects.exists()


@pytest.fixture
def server_task() -> Iterator[None]:
    """Register a Server task `servernoop` for the duration of a test."""
    saved = {task_type: dict(tasks) for task_type, tasks in BaseTask._registry.items()}

    class ServerNoopData(BaseTaskData):
        pass

    class ServerNoop(BaseTask[ServerNoopData]):
        TASK_TYPE = TaskType.SERVER
        TASK_VERSION = 1
        TASK_DATA_MODEL = ServerNoopData

    yield
    BaseTask._registry.clear()
    BaseTask._registry.update(saved)


def test_only_superusers_create_server_tasks(
    playground: Playground, client: APIClient, server_task: None
) -> None:
    body = {"task_name": "servernoop", "task_data": {}}
    response = client.post(LIST_URL, body, format="json")
    assert_problem(response, 400, "Cannot create work request")
    admin = playground.create_user("admin", is_superuser=True)
    response = api_client(playground.create_user_token(admin)).post(LIST_URL, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["task_type"] == "Server"


def test_signing_tasks_need_the_signer_role_on_their_keys(
    playground: Playground, client: APIClient, user: User
) -> None:
    from debusine.server.signing_keys import grant_signer, register_signing_key

    fingerprint = "0123456789ABCDEF0123456789ABCDEF01234567"
    asset = register_signing_key("openpgp", fingerprint, "Archive", playground.workspace)
    body = {
        "task_name": "sign",
        "task_data": {"purpose": "openpgp", "key": fingerprint, "unsigned": [1]},
    }
    refused = assert_problem(client.post(LIST_URL, body, format="json"), 403, "Permission denied")
    assert refused["detail"] == (
        f"{user.username} does not have the signer role on openpgp key {fingerprint}"
        f" in workspace {playground.workspace.name}"
    )
    assert not WorkRequest.objects.filter(task_type=TaskType.SIGNING).exists()
    grant_signer(asset, playground.workspace, playground.create_group("signers", [user]))
    response = client.post(LIST_URL, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["task_type"] == "Signing"


def test_only_superusers_generate_signing_keys(playground: Playground, client: APIClient) -> None:
    body = {"task_name": "generatekey", "task_data": {"purpose": "uefi", "description": "SB"}}
    refused = assert_problem(client.post(LIST_URL, body, format="json"), 403, "Permission denied")
    assert refused["detail"] == "only a superuser may create generatekey work requests"
    admin = playground.create_user("admin", is_superuser=True)
    response = api_client(playground.create_user_token(admin)).post(LIST_URL, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["task_type"] == "Signing"


# --- Read one -------------------------------------------------------------------------------


def test_get_shows_artifacts_created_by_the_work_request(
    playground: Playground, client: APIClient, user: User
) -> None:
    work_request = playground.create_work_request(created_by=user)
    other = playground.create_work_request(created_by=user)
    created = [playground.create_artifact(created_by_work_request=work_request) for _ in range(3)]
    playground.create_artifact(created_by_work_request=other)
    playground.create_artifact()
    response = client.get(detail_url(work_request))
    assert response.status_code == 200
    assert response.json()["artifacts"] == sorted(artifact.pk for artifact in created)


def test_get_finished_work_request(
    playground: Playground,
    client: APIClient,
    user: User,
    start_work_request: Callable[..., WorkRequest],
) -> None:
    worker, _ = playground.create_worker()
    work_request = start_work_request(playground.create_work_request(created_by=user), worker)
    work_request.started_at = timezone.now() - timedelta(seconds=90, microseconds=500000)
    work_request.save()
    transitions.complete(work_request, "failure", {"runtime_statistics": {"duration": 90}})
    body = client.get(detail_url(work_request)).json()
    assert body["status"] == "completed"
    assert body["result"] == "failure"
    assert body["worker"] == worker.pk
    assert isinstance(body["duration"], float)
    assert 90 < body["duration"] < 91
    assert body["started_at"].endswith("Z")
    assert body["completed_at"].endswith("Z")
    WorkRequestResponse.model_validate(body)


def test_get_visibility(
    playground: Playground,
    user: User,
    private: Workspace,
    outsider: tuple[User, str],
    worker_token: str,
) -> None:
    public_one = playground.create_work_request(created_by=user)
    private_one = playground.create_work_request(created_by=user, workspace=private)
    _, outsider_token = outsider
    for token in (None, outsider_token):
        assert api_client(token).get(detail_url(public_one)).status_code == 200
        response = api_client(token).get(detail_url(private_one))
        assert_problem(response, 404, f"Work request {private_one.pk} not found")
    # Workers see every work request of the scope: they run them.
    assert api_client(worker_token).get(detail_url(private_one)).status_code == 200
    playground.grant(outsider[0], private, WorkspaceRoles.VIEWER)
    assert api_client(outsider_token).get(detail_url(private_one)).status_code == 200


def test_get_unknown_work_request_is_404(client: APIClient) -> None:
    assert_problem(client.get(detail_url(999999)), 404, "Work request 999999 not found")


def test_get_is_limited_to_the_request_scope(
    playground: Playground, user: User, user_token: str, worker_token: str
) -> None:
    other = Scope.objects.create(name="other")
    playground.create_workspace("System", scope=other, public=True)
    work_request = playground.create_work_request(created_by=user)
    assert_problem(api_client(user_token, scope="other").get(detail_url(work_request)), 404)
    assert (
        api_client(user_token, scope="debusine").get(detail_url(work_request)).status_code == 200
    )
    assert api_client(worker_token).get(detail_url(work_request)).status_code == 200


def test_unknown_scope_header_is_a_plain_404(playground: Playground, user: User) -> None:
    work_request = playground.create_work_request(created_by=user)
    for method in ("get", "post"):
        response = getattr(api_client(scope="nosuchscope"), method)(detail_url(work_request))
        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/plain")


def test_lowercase_token_header_and_double_slash_path(
    playground: Playground, user: User, user_token: str, private: Workspace
) -> None:
    playground.grant(user, private, WorkspaceRoles.VIEWER)
    work_request = playground.create_work_request(created_by=user, workspace=private)
    # A raw WSGI request: Django maps any spelling of the header name to HTTP_TOKEN.
    client = Client(headers={"token": user_token})
    for path in (detail_url(work_request), f"/api//1.0/work-request/{work_request.pk}/"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.content)
        assert response.json()["id"] == work_request.pk
    assert Client().get(detail_url(work_request)).status_code == 404


def test_get_detail_query_count(
    playground: Playground, client: APIClient, user: User, django_assert_max_num_queries: Any
) -> None:
    work_request = playground.create_work_request(created_by=user)
    for _ in range(5):
        playground.create_artifact(created_by_work_request=work_request)
    client.get(detail_url(work_request))  # warm up: last_seen_at is written once
    # Scope, token, then the work request with its artifact ids in one query (plus the
    # savepoint pair of the request's transaction).
    with django_assert_max_num_queries(5):
        assert len(client.get(detail_url(work_request)).json()["artifacts"]) == 5


# --- List -----------------------------------------------------------------------------------


def make_work_requests(playground: Playground, user: User, count: int, **fields: Any) -> list[int]:
    return [playground.create_work_request(created_by=user, **fields).pk for _ in range(count)]


def walk(client: APIClient, url: str, key: str) -> list[list[int]]:
    """Follow `key` ("next" or "previous") links from `url`; return each page's ids."""
    pages: list[list[int]] = []
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url)
        assert response.status_code == 200, response.content
        page = WorkRequestPage.model_validate(response.json())
        pages.append([work_request.id for work_request in page.results])
        next_url = getattr(page, key)
        assert len(pages) < 20
    return pages


def test_list_pages_newest_first_both_ways(
    playground: Playground, client: APIClient, user: User, settings: Any
) -> None:
    settings.DEBUSINE_WORK_REQUEST_PAGE_SIZE = 10
    ids = make_work_requests(playground, user, 25)
    newest_first = ids[::-1]
    first = client.get(LIST_URL).json()
    assert set(first) == {"next", "previous", "results"}
    assert first["previous"] is None
    assert first["next"].startswith("http://testserver/api/1.0/work-request/?cursor=")
    forward = walk(client, LIST_URL, "next")
    assert forward == [newest_first[:10], newest_first[10:20], newest_first[20:]]
    last_page = client.get(walk_url(client, LIST_URL, 2)).json()
    assert last_page["next"] is None
    backward = walk(client, last_page["previous"], "previous")
    assert backward == [newest_first[10:20], newest_first[:10]]


def walk_url(client: APIClient, url: str, steps: int) -> str:
    for _ in range(steps):
        url = client.get(url).json()["next"]
    return url


def test_list_pages_are_stable_under_inserts(
    playground: Playground, client: APIClient, user: User, settings: Any
) -> None:
    settings.DEBUSINE_WORK_REQUEST_PAGE_SIZE = 3
    ids = make_work_requests(playground, user, 7)
    first = client.get(LIST_URL).json()
    assert [row["id"] for row in first["results"]] == ids[:-4:-1]
    added = make_work_requests(playground, user, 4)
    second = client.get(first["next"]).json()
    # Newer work requests do not push rows of page one onto page two.
    assert [row["id"] for row in second["results"]] == ids[-4:-7:-1]
    # Going back from page two shows the rows above it: first the old page one.
    back = client.get(second["previous"]).json()
    assert [row["id"] for row in back["results"]] == ids[:-4:-1]
    # Then the rows just above it, and finally a short page with the newest.
    newer = client.get(back["previous"]).json()
    assert [row["id"] for row in newer["results"]] == added[2::-1]
    top = client.get(newer["previous"]).json()
    assert [row["id"] for row in top["results"]] == [added[3]]
    assert top["previous"] is None


def test_list_empty_and_past_the_end(
    client: APIClient, playground: Playground, user: User
) -> None:
    assert client.get(LIST_URL).json() == {"next": None, "previous": None, "results": []}
    [only] = make_work_requests(playground, user, 1)
    from debusine.server.api.work_requests import encode_cursor

    past = client.get(f"{LIST_URL}?cursor={encode_cursor('n', only)}").json()
    assert past["results"] == [] and past["next"] is None
    assert [row["id"] for row in client.get(past["previous"]).json()["results"]] == [only]


@pytest.mark.parametrize("cursor", ["garbage!", "eDE", "bi01", "", "%FF"])
def test_list_invalid_cursor_is_404(client: APIClient, cursor: str) -> None:
    response = client.get(f"{LIST_URL}?cursor={cursor}")
    if cursor == "":
        assert response.status_code == 200
    else:
        assert_problem(response, 404, "Invalid cursor")


def test_list_visibility(
    playground: Playground,
    user: User,
    user_token: str,
    private: Workspace,
    outsider: tuple[User, str],
    worker_token: str,
) -> None:
    public_ids = make_work_requests(playground, user, 2)
    private_ids = make_work_requests(playground, user, 2, workspace=private)
    other = Scope.objects.create(name="other")
    make_work_requests(
        playground, user, 1, workspace=playground.create_workspace("o", scope=other, public=True)
    )

    def listed(token: str | None) -> set[int]:
        response = api_client(token).get(LIST_URL)
        assert response.status_code == 200
        return {row["id"] for row in response.json()["results"]}

    assert listed(None) == set(public_ids)
    assert listed(outsider[1]) == set(public_ids)
    assert listed(user_token) == set(public_ids)
    assert listed(worker_token) == set(public_ids + private_ids)
    playground.grant(user, private, WorkspaceRoles.VIEWER)
    assert listed(user_token) == set(public_ids + private_ids)


def test_list_query_count_does_not_grow_with_history(
    playground: Playground, client: APIClient, user: User, settings: Any
) -> None:
    settings.DEBUSINE_WORK_REQUEST_PAGE_SIZE = 10

    def queries_for_a_page() -> int:
        client.get(LIST_URL)  # warm up: last_seen_at is written at most every 30 s
        with CaptureQueriesContext(connection) as captured:
            response = client.get(LIST_URL)
        assert response.status_code == 200
        return len(captured.captured_queries)

    [first] = make_work_requests(playground, user, 1)
    playground.create_artifact(created_by_work_request=WorkRequest.objects.get(pk=first))
    with_one = queries_for_a_page()
    for work_request_id in make_work_requests(playground, user, 29):
        for _ in range(2):
            playground.create_artifact(
                created_by_work_request=WorkRequest.objects.get(pk=work_request_id)
            )
    with_thirty = queries_for_a_page()
    # Scope, token, one page query (plus the savepoint pair of the request's transaction).
    assert with_one == with_thirty <= 5
    results = client.get(LIST_URL).json()["results"]
    assert len(results) == 10
    assert all(len(row["artifacts"]) == 2 for row in results)


# --- Priority adjustment ----------------------------------------------------------------------


def test_creator_may_lower_their_own_priority(
    playground: Playground, client: APIClient, user: User
) -> None:
    work_request = playground.create_work_request(created_by=user)
    response = client.patch(detail_url(work_request), {"priority_adjustment": -5}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["priority_adjustment"] == -5
    work_request.refresh_from_db()
    assert work_request.priority_adjustment == -5
    response = client.patch(detail_url(work_request), {"priority_adjustment": 1}, format="json")
    assert_problem(response, 403, "Permission denied")
    work_request.refresh_from_db()
    assert work_request.priority_adjustment == -5


def test_raising_priority_needs_the_permission(
    playground: Playground, client: APIClient, user: User, outsider: tuple[User, str]
) -> None:
    work_request = playground.create_work_request(created_by=user)
    manager, manager_token = outsider
    body = {"priority_adjustment": 10}
    assert_problem(
        api_client(manager_token).patch(detail_url(work_request), body, format="json"), 403
    )
    # Not the creator: even lowering is refused.
    response = api_client(manager_token).patch(
        detail_url(work_request), {"priority_adjustment": -1}, format="json"
    )
    assert_problem(response, 403)
    manager.user_permissions.add(Permission.objects.get(codename="manage_workrequest_priorities"))
    response = api_client(manager_token).patch(detail_url(work_request), body, format="json")
    assert response.status_code == 200, response.content
    admin = playground.create_user("admin", is_superuser=True)
    response = api_client(playground.create_user_token(admin)).patch(
        detail_url(work_request), {"priority_adjustment": 20}, format="json"
    )
    assert response.json()["priority_adjustment"] == 20


@pytest.mark.parametrize(
    ("body", "title"),
    [
        ({"priority_adjustment": 1, "priority_base": 3}, "Invalid fields: priority_base"),
        ({"status": "completed"}, "Invalid fields: status"),
        ({}, "Invalid request"),
        ({"priority_adjustment": "high"}, "Invalid request"),
        ({"priority_adjustment": 1.5}, "Invalid request"),
        ({"priority_adjustment": True}, "Invalid request"),
    ],
)
def test_patch_rejects_bad_bodies(
    playground: Playground, client: APIClient, user: User, body: Any, title: str
) -> None:
    work_request = playground.create_work_request(created_by=user)
    assert_problem(client.patch(detail_url(work_request), body, format="json"), 400, title)
    work_request.refresh_from_db()
    assert work_request.priority_adjustment == 0


def test_patch_needs_a_user_and_a_visible_work_request(
    playground: Playground, user: User, client: APIClient, worker_token: str, private: Workspace
) -> None:
    work_request = playground.create_work_request(created_by=user)
    body = {"priority_adjustment": -1}
    for token in (None, worker_token):
        assert_problem(api_client(token).patch(detail_url(work_request), body, format="json"), 403)
    hidden = playground.create_work_request(created_by=user, workspace=private)
    assert_problem(client.patch(detail_url(hidden), body, format="json"), 404)


# --- Retry and abort --------------------------------------------------------------------------


def failed_work_request(playground: Playground, user: User, **fields: Any) -> WorkRequest:
    work_request = playground.create_work_request(created_by=user, **fields)
    transitions.complete(work_request, "failure")
    return work_request


def retry_url(work_request: WorkRequest) -> str:
    return f"{detail_url(work_request)}retry/"


def abort_url(work_request: WorkRequest) -> str:
    return f"{detail_url(work_request)}abort/"


def test_retry_answers_with_the_new_work_request(
    playground: Playground, client: APIClient, user: User
) -> None:
    old = failed_work_request(playground, user)
    response = client.post(retry_url(old), {}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] != old.pk
    assert body["status"] == "pending"
    assert body["result"] == ""
    assert body["task_data"] == old.task_data
    new = WorkRequest.objects.get(pk=body["id"])
    assert new.supersedes == old
    # Retried once: the old one cannot be retried again.
    response = client.post(retry_url(old), {}, format="json")
    assert_problem(response, 400, "Cannot retry work request")
    assert WorkRequest.objects.count() == 2


def test_retry_refuses_unfinished_or_successful_work_requests(
    playground: Playground, client: APIClient, user: User
) -> None:
    pending = playground.create_work_request(created_by=user)
    succeeded = playground.create_work_request(created_by=user)
    transitions.complete(succeeded, "success")
    for work_request in (pending, succeeded):
        assert_problem(
            client.post(retry_url(work_request), {}, format="json"),
            400,
            "Cannot retry work request",
        )
    assert WorkRequest.objects.count() == 2


def test_who_may_retry_and_abort(
    playground: Playground, user: User, outsider: tuple[User, str], worker_token: str
) -> None:
    stranger, stranger_token = outsider
    colleague = playground.create_user("bob")
    playground.grant(colleague, playground.workspace, WorkspaceRoles.CONTRIBUTOR)
    colleague_token = playground.create_user_token(colleague)
    admin = playground.create_user("admin", is_superuser=True)
    admin_token = playground.create_user_token(admin)

    for url_of in (retry_url, abort_url):
        work_request = (
            failed_work_request(playground, stranger)
            if url_of is retry_url
            else (playground.create_work_request(created_by=user))
        )
        for token in (None, worker_token):
            assert_problem(
                api_client(token).post(url_of(work_request), {}, format="json"), 403, "Error"
            )
        # A stranger to the workspace may not, even though it is public.
        if work_request.created_by != stranger:
            assert_problem(
                api_client(stranger_token).post(url_of(work_request), {}, format="json"),
                403,
                "Permission denied",
            )
        assert (
            api_client(colleague_token).post(url_of(work_request), {}, format="json").status_code
            == 200
        )

    # The creator may, without any role; so may superusers.
    own = failed_work_request(playground, stranger)
    assert api_client(stranger_token).post(retry_url(own), {}, format="json").status_code == 200
    pending = playground.create_work_request(created_by=user)
    assert api_client(admin_token).post(abort_url(pending), {}, format="json").status_code == 200


def test_abort_clears_the_worker(
    playground: Playground,
    client: APIClient,
    user: User,
    start_work_request: Callable[..., WorkRequest],
) -> None:
    worker, _ = playground.create_worker()
    work_request = start_work_request(playground.create_work_request(created_by=user), worker)
    response = client.post(abort_url(work_request), {}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "aborted"
    assert body["worker"] is None
    assert body["aborted_by"] == user.pk
    work_request.refresh_from_db()
    assert work_request.status == WorkRequestStatus.ABORTED
    assert work_request.worker is None


def test_abort_refuses_finished_work_requests(
    playground: Playground, client: APIClient, user: User
) -> None:
    finished = failed_work_request(playground, user)
    assert_problem(
        client.post(abort_url(finished), {}, format="json"), 400, "Cannot abort work request"
    )
    aborted = playground.create_work_request(created_by=user)
    transitions.abort(aborted, user)
    assert_problem(
        client.post(abort_url(aborted), {}, format="json"), 400, "Cannot abort work request"
    )
    finished.refresh_from_db()
    assert finished.status == WorkRequestStatus.COMPLETED


def test_retry_and_abort_of_hidden_work_requests_are_404(
    playground: Playground, client: APIClient, user: User, private: Workspace
) -> None:
    hidden = failed_work_request(playground, user, workspace=private)
    assert_problem(client.post(retry_url(hidden), {}, format="json"), 404)
    assert_problem(client.post(abort_url(hidden), {}, format="json"), 404)
    assert_problem(client.post("/api/1.0/work-request/424242/retry/", {}, format="json"), 404)


# --- Manual unblock ---------------------------------------------------------------------------


def unblock_url(work_request: WorkRequest) -> str:
    return f"{detail_url(work_request)}unblock/"


def review_step(playground: Playground, user: User, **fields: Any) -> WorkRequest:
    return playground.create_work_request(
        created_by=user, status=WorkRequestStatus.BLOCKED, unblock_strategy="manual", **fields
    )


def test_unblock_accept_makes_it_pending_and_schedules_it(
    playground: Playground,
    client: APIClient,
    user: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    worker = playground.create_connected_worker()
    step = review_step(playground, user)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            unblock_url(step), {"notes": "reviewed", "action": "accept"}, format="json"
        )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "pending"
    [entry] = body["workflow_data"]["manual_unblock"]["log"]
    assert entry["notes"] == "reviewed" and entry["action"] == "accept"
    assert entry["user_id"] == user.pk
    step.refresh_from_db()
    # The scheduling pass the accept asked for gave it to the idle worker.
    assert step.worker == worker


def test_unblock_notes_only_and_reject(
    playground: Playground, client: APIClient, user: User
) -> None:
    step = review_step(playground, user)

    noted = client.post(unblock_url(step), {"notes": "needs a second look"}, format="json")
    assert noted.status_code == 200, noted.content
    assert noted.json()["status"] == "blocked"
    rejected = client.post(unblock_url(step), {"action": "reject"}, format="json")
    assert rejected.status_code == 200, rejected.content
    body = rejected.json()
    assert body["status"] == "aborted"
    assert body["aborted_by"] == user.pk
    log = body["workflow_data"]["manual_unblock"]["log"]
    assert [(entry["notes"], entry["action"]) for entry in log] == [
        ("needs a second look", None),
        (None, "reject"),
    ]


def test_unblock_refuses_the_wrong_work_requests(
    playground: Playground, client: APIClient, user: User
) -> None:
    ordinary = playground.create_work_request(created_by=user, status=WorkRequestStatus.BLOCKED)
    problem = assert_problem(
        client.post(unblock_url(ordinary), {"action": "accept"}, format="json"),
        400,
        "Cannot unblock work request",
    )
    assert "not a manual-unblock work request" in problem["detail"]
    pending = review_step(playground, user)
    pending.status = WorkRequestStatus.PENDING
    pending.save()
    problem = assert_problem(
        client.post(unblock_url(pending), {"notes": "x"}, format="json"),
        400,
        "Cannot unblock work request",
    )
    assert "is pending" in problem["detail"]
    waiting = review_step(playground, user)
    waiting.dependencies.add(playground.create_work_request(created_by=user))
    assert_problem(
        client.post(unblock_url(waiting), {"action": "accept"}, format="json"),
        400,
        "Cannot unblock work request",
    )
    for work_request in (ordinary, pending, waiting):
        work_request.refresh_from_db()
        assert "manual_unblock" not in work_request.workflow_data_json


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"action": "approve"},
        {"notes": 3},
        {"notes": "x" * 65537},
        {"notes": "x", "extra": True},
        [],
    ],
)
def test_unblock_rejects_bad_bodies(
    playground: Playground, client: APIClient, user: User, body: Any
) -> None:
    step = review_step(playground, user)
    assert_problem(client.post(unblock_url(step), body, format="json"), 400)
    step.refresh_from_db()
    assert step.status == WorkRequestStatus.BLOCKED
    assert step.workflow_data_json == {}


def test_who_may_unblock(
    playground: Playground,
    user: User,
    outsider: tuple[User, str],
    worker_token: str,
    private: Workspace,
) -> None:
    stranger, stranger_token = outsider
    admin_token = playground.create_user_token(playground.create_user("admin", is_superuser=True))
    # Its creator, without a role in the (public) workspace, may not review it.
    own = review_step(playground, stranger)
    for token in (None, worker_token):
        assert_problem(
            api_client(token).post(unblock_url(own), {"notes": "x"}, format="json"), 403
        )
    assert_problem(
        api_client(stranger_token).post(unblock_url(own), {"notes": "x"}, format="json"),
        403,
        "Permission denied",
    )
    hidden = review_step(playground, user, workspace=private)
    assert_problem(
        api_client(stranger_token).post(unblock_url(hidden), {"notes": "x"}, format="json"), 404
    )
    # A contributor of the workspace and a superuser may.
    assert (
        api_client(playground.create_user_token(user))
        .post(unblock_url(own), {"notes": "x"}, format="json")
        .status_code
        == 200
    )
    assert (
        api_client(admin_token)
        .post(unblock_url(own), {"action": "reject"}, format="json")
        .status_code
        == 200
    )
    own.refresh_from_db()
    assert own.status == WorkRequestStatus.ABORTED


# --- The creation path shared with `debusine-admin create_work_request` ----------------------


def test_create_for_task_stores_a_pending_work_request(playground: Playground, user: User) -> None:
    work_request = transitions.create(
        workspace=playground.workspace,
        created_by=user,
        task_type="Worker",
        task_name="sleep",
        task_data={"seconds": 2},
        event_reactions={"on_success": []},
        priority_base=7,
    )
    work_request.refresh_from_db()
    assert work_request.status == WorkRequestStatus.PENDING
    assert work_request.result == ""
    assert work_request.task_data == {"seconds": 2}
    assert work_request.priority_base == 7
    assert work_request.event_reactions_json == {"on_success": []}


@pytest.mark.parametrize(
    ("task_type", "task_name", "task_data", "message"),
    [
        ("Signing", "noop", {}, "task name is not registered"),
        ("NoSuchType", "noop", {}, "task name is not registered"),
        (
            "Worker",
            "sleep",
            {"seconds": -1},
            "seconds: Input should be greater than or equal to 0",
        ),
        ("Worker", "noop", "yes", "Input should be a valid dictionary"),
    ],
)
def test_create_for_task_refuses_invalid_requests(
    playground: Playground,
    user: User,
    task_type: str,
    task_name: str,
    task_data: Any,
    message: str,
) -> None:
    with pytest.raises(InvalidWorkRequestError, match=message) as caught:
        transitions.create(
            workspace=playground.workspace,
            created_by=user,
            task_type=task_type,
            task_name=task_name,
            task_data=task_data,
        )
    assert caught.value.title == "Cannot create work request"
    assert not WorkRequest.objects.exists()


def test_unsupported_methods_are_405_problems(
    playground: Playground, client: APIClient, user: User
) -> None:
    work_request = playground.create_work_request(created_by=user)
    assert_problem(client.delete(detail_url(work_request)), 405, "Error")
    assert_problem(client.put(detail_url(work_request), {}, format="json"), 405, "Error")
    assert_problem(client.get(retry_url(work_request)), 405, "Error")
    assert WorkRequest.objects.filter(pk=work_request.pk).exists()


# --- Live log -------------------------------------------------------------------------------


def test_live_log_pages_through_the_stored_frames(
    client: APIClient, user: User, playground: Playground
) -> None:
    work_request = playground.create_work_request(created_by=user)
    frames = [
        live_logs.frame_to_store(
            {
                "type": "log_data",
                "work_request_id": work_request.pk,
                "stream": "internal",
                "data": f"line {index}\n",
                "timestamp": "2026-01-01T00:00:00Z",
            }
        )
        for index in range(3)
    ]
    store = redis_client()
    store.delete(live_logs.key(work_request.pk))
    try:
        for frame in frames:
            store.rpush(live_logs.key(work_request.pk), json.dumps(frame))
        url = f"{LIST_URL}{work_request.pk}/live-log/"

        first = client.get(url).json()
        after = client.get(url, {"after": "2"}).json()
        bad = client.get(url, {"after": "x"})
    finally:
        store.delete(live_logs.key(work_request.pk))

    assert first == {"frames": frames, "next": 3, "status": "pending"}
    assert after == {"frames": frames[2:], "next": 3, "status": "pending"}
    assert bad.status_code == 400
    assert bad.json()["title"] == "Invalid position"
    assert client.get(f"{LIST_URL}999999/live-log/").status_code == 404


def test_only_well_formed_log_frames_are_stored() -> None:
    assert live_logs.frame_to_store({"type": "log_data", "work_request_id": 1}) is None
    assert live_logs.frame_to_store({"type": "other", "work_request_id": 1}) is None
    assert live_logs.frame_to_store([]) is None
    end = live_logs.frame_to_store(
        {"type": "log_data_end", "work_request_id": 4, "exit_code": 2, "timestamp": "t"}
    )
    assert end == {"type": "log_data_end", "work_request_id": 4, "exit_code": 2, "timestamp": "t"}
    data = live_logs.frame_to_store(
        {"type": "log_data", "work_request_id": 4, "stream": "stdout", "data": "x" * 10**6}
    )
    assert data is not None and len(data["data"]) == live_logs.MAX_TEXT
