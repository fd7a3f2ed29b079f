"""
Cross-cutting security and protocol-conformance tests of the REST API.

Hostile request bodies and URLs never produce a 500 and change nothing; scopes, private
workspaces and token kinds are isolated as DESIGN.md §4 and protocol.md §1 say; the objects
returned have the shapes and status codes protocol.md §2 and §5.2 require.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from debusine.protocol.artifacts import ArtifactResponse, RelationResponse
from debusine.protocol.work_requests import WorkRequestPage, WorkRequestResponse
from debusine.server.api.errors import PROBLEM_CONTENT_TYPE
from debusine.server.api.json_parser import MAX_JSON_DEPTH
from debusine.server.db.models import (
    Artifact,
    ArtifactRelation,
    Scope,
    Token,
    User,
    Worker,
    WorkerType,
    WorkRequest,
    Workspace,
)
from debusine.server.work_requests import transitions
from debusine.testing.playground import FileSpec, Playground, api_client

API = "/api/1.0"
SHA256_OF_A = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"


def assert_problem(response: Any, status_code: int) -> dict[str, Any]:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert isinstance(body["title"], str) and body["title"]
    return body


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# --- Hostile bodies ---------------------------------------------------------------------------

#: Values put in place of each field of a valid body: wrong types, integers beyond 64 bits,
#: strings PostgreSQL cannot store or columns cannot hold, deep nesting.
HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    1.5,
    1e308,
    2**31,
    -(2**31) - 1,
    2**63,
    -(2**70),
    "",
    "x" * 10_000,
    "\x00",
    "a\x00b",
    "\ud800",
    "é☃\u2028",
    [],
    {},
    {"\x00": 1},
    nested(MAX_JSON_DEPTH + 5),
]

#: Whole bodies that are not what any endpoint accepts.
HOSTILE_RAW_BODIES: list[str | bytes] = [
    "",
    "not json",
    "[]",
    "null",
    "1",
    '"text"',
    '{"a": NaN}',
    '{"a": Infinity}',
    "[" * 100_000,
    '{"a": "\\u0000"}',
    '{"\\u0000": 1}',
    '{"a": "\\ud800"}',
    b"\xff\xfe{}",
    '{"a": 1, "a": 2}',
]


def set_at(body: dict[str, Any], location: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the dotted `location` set to `value`."""
    mutated = copy.deepcopy(body)
    *parents, last = location.split(".")
    target = mutated
    for key in parents:
        target = target[key]
    target[last] = value
    return mutated


@pytest.fixture
def superuser_token(playground: Playground) -> str:
    return playground.create_user_token(playground.create_user("root", is_superuser=True))


class Endpoint:
    """A write endpoint, a valid body for it, and the fields of that body to attack."""

    def __init__(
        self,
        method: str,
        url: str,
        body: dict[str, Any],
        fields: list[str],
        token: str,
    ) -> None:
        self.method, self.url, self.body, self.fields, self.token = (
            method,
            url,
            body,
            fields,
            token,
        )

    def send(self, payload: str | bytes) -> Any:
        client = api_client(self.token)
        return getattr(client, self.method)(
            self.url, data=payload, content_type="application/json"
        )


def row_counts() -> tuple[int, ...]:
    return (
        WorkRequest.objects.count(),
        Artifact.objects.count(),
        ArtifactRelation.objects.count(),
    )


@pytest.fixture
def endpoints(
    playground: Playground, user: User, user_token: str, superuser_token: str
) -> dict[str, Endpoint]:
    worker, worker_token = playground.create_worker("fuzzer")
    work_request = playground.create_work_request(created_by=user, worker=worker)
    source = playground.create_artifact(files=[FileSpec("a", b"a")], complete=True)
    target = playground.create_artifact(files=[FileSpec("b", b"b")], complete=True)
    file_entry = {
        "size": 1,
        "checksums": {"sha256": SHA256_OF_A},
        "type": "file",
        "content_type": "text/plain",
    }
    artifact_body = {
        "category": "debusine:test",
        "workspace": "System",
        "files": {"a": file_entry},
        "data": {"key": "value"},
        "expire_at": None,
        "expiration_delay": "7 00:00:00",
    }
    artifact_fields = [
        "category",
        "workspace",
        "files",
        "files.a",
        "files.a.size",
        "files.a.checksums",
        "files.a.checksums.sha256",
        "files.a.type",
        "files.a.content_type",
        "data",
        "data.key",
        "expire_at",
        "expiration_delay",
    ]
    return {
        "create work request": Endpoint(
            "post",
            f"{API}/work-request/",
            {
                "task_name": "noop",
                "task_data": {"result": True, "task_configuration": None},
                "event_reactions": {},
                "workspace": "System",
            },
            [
                "task_name",
                "task_data",
                "task_data.result",
                "task_data.task_configuration",
                "event_reactions",
                "workspace",
            ],
            user_token,
        ),
        "patch work request": Endpoint(
            "patch",
            f"{API}/work-request/{work_request.pk}/",
            {"priority_adjustment": 1},
            ["priority_adjustment"],
            superuser_token,
        ),
        "create artifact as user": Endpoint(
            "post", f"{API}/artifact/", artifact_body, artifact_fields, user_token
        ),
        "create artifact as worker": Endpoint(
            "post",
            f"{API}/artifact/",
            artifact_body | {"work_request": work_request.pk},
            [*artifact_fields, "work_request"],
            worker_token,
        ),
        "create relation": Endpoint(
            "post",
            f"{API}/artifact-relation/",
            {"artifact": source.pk, "target": target.pk, "type": "relates-to"},
            ["artifact", "target", "type"],
            user_token,
        ),
    }


ENDPOINT_NAMES = [
    "create work request",
    "patch work request",
    "create artifact as user",
    "create artifact as worker",
    "create relation",
]


def check_no_server_error(endpoint: Endpoint, payload: str | bytes) -> str | None:
    """None if the endpoint answered sensibly, else what went wrong."""
    before = row_counts()
    try:
        response = endpoint.send(payload)
    except Exception as error:  # collected, not raised: every failure is a finding
        return f"{payload[:80]!r}: raised {type(error).__name__}: {error}"
    if response.status_code >= 500:
        return f"{payload[:80]!r}: {response.status_code}"
    if response.status_code >= 400:
        if response["Content-Type"] != PROBLEM_CONTENT_TYPE:
            return f"{payload[:80]!r}: {response.status_code} is not a problem"
        if row_counts() != before:
            return f"{payload[:80]!r}: refused with {response.status_code} but changed rows"
    return None


@pytest.mark.parametrize("name", ENDPOINT_NAMES)
def test_hostile_field_values_never_cause_a_server_error(
    endpoints: dict[str, Endpoint], name: str
) -> None:
    endpoint = endpoints[name]
    assert endpoint.send(json.dumps(endpoint.body)).status_code < 300
    failures = []
    for location in endpoint.fields:
        for value in HOSTILE_VALUES:
            payload = json.dumps(set_at(endpoint.body, location, value))
            if (failure := check_no_server_error(endpoint, payload)) is not None:
                failures.append(f"{location}={failure}")
    assert failures == []


@pytest.mark.parametrize("name", ENDPOINT_NAMES)
def test_hostile_raw_bodies_are_refused(endpoints: dict[str, Endpoint], name: str) -> None:
    endpoint = endpoints[name]
    failures = []
    for payload in HOSTILE_RAW_BODIES:
        before = row_counts()
        response = endpoint.send(payload)
        if response.status_code != 400 or response["Content-Type"] != PROBLEM_CONTENT_TYPE:
            failures.append(f"{payload[:40]!r}: {response.status_code} {response.content[:80]!r}")
        elif row_counts() != before:
            failures.append(f"{payload[:40]!r}: changed rows")
    # A repeated key is legal JSON (the last one wins): only that one may succeed.
    assert [failure for failure in failures if 'a": 1, "a"' not in failure] == []


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ('{"task_name": "noop", "task_data": {}, "workspace": "Sys\\u0000"}', "NUL"),
        ('{"task_name": "noop", "task_data": {"\\ud800": 1}}', "surrogate"),
        ("[" * 100_000, "nested deeper"),
        (json.dumps({"task_name": "noop", "task_data": nested(MAX_JSON_DEPTH)}), "nested"),
    ],
)
def test_unstorable_json_is_a_parse_problem(user_token: str, payload: str, detail: str) -> None:
    response = api_client(user_token).post(
        f"{API}/work-request/", data=payload, content_type="application/json"
    )
    body = assert_problem(response, 400)
    assert body["title"] == "Cannot parse the request body"
    assert detail in body["detail"]
    assert not WorkRequest.objects.exists()


def test_moderately_nested_json_is_accepted(user_token: str) -> None:
    body = {
        "category": "debusine:test",
        "files": {},
        "data": {"deep": nested(MAX_JSON_DEPTH - 3)},
    }
    response = api_client(user_token).post(f"{API}/artifact/", body, format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("adjustment", [2**31 - 1, -(2**31)])
def test_priority_sum_must_fit_the_queue_index(
    playground: Playground, user: User, superuser_token: str, adjustment: int
) -> None:
    work_request = playground.create_work_request(
        created_by=user, priority_base=1 if adjustment > 0 else -1
    )
    response = api_client(superuser_token).patch(
        f"{API}/work-request/{work_request.pk}/", {"priority_adjustment": adjustment}, "json"
    )
    assert "outside" in assert_problem(response, 400)["detail"]
    work_request.refresh_from_db()
    assert work_request.priority_adjustment == 0


@pytest.mark.parametrize(
    "delay", ["999999999 00:00:00", "9" * 400, "P999999D", "1" + "0" * 30 + " days, 0:00:00"]
)
def test_absurd_expiration_delays_are_refused(user_token: str, delay: str) -> None:
    body = {"category": "debusine:test", "files": {}, "data": {}, "expiration_delay": delay}
    response = api_client(user_token).post(f"{API}/artifact/", body, format="json")
    assert "expiration_delay" in assert_problem(response, 400)["detail"]
    assert not Artifact.objects.exists()


# --- Hostile URLs and headers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"{API}/work-request/{2**70}/",
        f"{API}/work-request/{2**70}/retry/",
        f"{API}/artifact/{2**70}/",
        f"{API}/artifact/{2**70}",
        f"{API}/artifact-relation/?artifact={2**70}",
        f"{API}/artifact-relation/?target_artifact=-1",
    ],
)
def test_ids_beyond_64_bits_are_not_found(user_token: str, url: str) -> None:
    client = api_client(user_token)
    response = client.post(url, {}, "json") if url.endswith("retry/") else client.get(url)
    assert_problem(response, 404)


@pytest.mark.parametrize(
    "url",
    [
        f"{API}/artifact/1/files/a%00b/",
        f"{API}/work-request/%00/",
        "/debusine/Sys%00tem/artifact/1/download/",
        "/debusine/System/artifact/1/download/a%00b",
    ],
)
def test_nul_in_the_path_is_not_found(user_token: str, url: str) -> None:
    client = api_client(user_token)
    response = client.generic("PUT", url, "") if "/files/" in url else client.get(url)
    assert response.status_code == 404


def test_nul_in_the_scope_header_is_an_unknown_scope(user_token: str) -> None:
    response = api_client(user_token, scope="debu\x00sine").get(f"{API}/whoami/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    "cursor", ["", "%00", "bjk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", "x" * 5000, "cC0x"]
)
def test_odd_cursors_never_cause_a_server_error(user_token: str, cursor: str) -> None:
    response = api_client(user_token).get(f"{API}/work-request/?cursor={cursor}")
    assert response.status_code in (200, 404)


# --- Scope isolation --------------------------------------------------------------------------


@pytest.fixture
def other_scope(playground: Playground) -> Scope:
    return Scope.objects.create(name="other")


@pytest.fixture
def other_public(playground: Playground, other_scope: Scope) -> Workspace:
    return playground.create_workspace("Public", public=True, scope=other_scope)


@pytest.fixture
def other_private(playground: Playground, other_scope: Scope) -> Workspace:
    return playground.create_workspace("Hidden", scope=other_scope)


def test_scope_header_selects_what_users_see(
    playground: Playground, user: User, user_token: str, other_public: Workspace
) -> None:
    """A user with a role in the default scope sees another scope's objects only through it."""
    work_request = playground.create_work_request(created_by=user, workspace=other_public)
    artifact = playground.create_artifact(workspace=other_public)
    wr_url, artifact_url = (
        f"{API}/work-request/{work_request.pk}/",
        f"{API}/artifact/{artifact.pk}/",
    )

    default = api_client(user_token)
    assert_problem(default.get(wr_url), 404)
    assert_problem(default.get(artifact_url), 404)
    assert default.get(f"{API}/work-request/").json()["results"] == []

    other = api_client(user_token, scope="other")
    assert other.get(wr_url).status_code == 200
    assert other.get(artifact_url).status_code == 200


def test_role_in_one_scope_gives_nothing_in_another(
    playground: Playground, user: User, user_token: str, other_private: Workspace
) -> None:
    work_request = playground.create_work_request(created_by=user, workspace=other_private)
    artifact = playground.create_artifact(workspace=other_private, files=[FileSpec("f", b"f")])
    client = api_client(user_token, scope="other")
    assert_problem(client.get(f"{API}/work-request/{work_request.pk}/"), 404)
    assert_problem(client.post(f"{API}/work-request/{work_request.pk}/abort/", {}, "json"), 404)
    assert_problem(client.get(f"{API}/artifact/{artifact.pk}/"), 404)
    assert_problem(client.get(f"{API}/artifact-relation/", {"artifact": artifact.pk}), 404)
    assert_problem(
        client.post(
            f"{API}/artifact/",
            {"category": "debusine:test", "files": {}, "data": {}, "workspace": "Hidden"},
            format="json",
        ),
        404,
    )
    # The default workspace name does not reach the default scope's workspace either.
    assert_problem(
        client.post(f"{API}/work-request/", {"task_name": "noop", "task_data": {}}, format="json"),
        404,
    )
    assert WorkRequest.objects.count() == 1
    assert Artifact.objects.count() == 1
    work_request.refresh_from_db()
    assert work_request.status == "pending"


def test_relations_never_cross_into_a_scope_the_header_did_not_name(
    playground: Playground, user: User, user_token: str, other_public: Workspace
) -> None:
    mine = playground.create_artifact(files=[FileSpec("a", b"a")], complete=True)
    theirs = playground.create_artifact(workspace=other_public)
    response = api_client(user_token).post(
        f"{API}/artifact-relation/",
        {"artifact": mine.pk, "target": theirs.pk, "type": "relates-to"},
        format="json",
    )
    assert_problem(response, 404)
    assert not ArtifactRelation.objects.exists()


def test_worker_outputs_go_to_the_scope_of_their_work_request(
    playground: Playground, user: User, other_private: Workspace
) -> None:
    """Workers send no scope header (protocol.md §8.9): the work request decides."""
    worker, key = playground.create_worker()
    work_request = playground.create_work_request(
        created_by=user, workspace=other_private, worker=worker
    )
    response = api_client(key).post(
        f"{API}/artifact/",
        {
            "category": "debusine:work-request-debug-logs",
            "workspace": "Hidden",
            "files": {},
            "data": {},
            "work_request": work_request.pk,
            "expire_at": None,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["scope"] == "other"
    assert Artifact.objects.get().workspace == other_private
    # And the worker reads it back without a scope header.
    assert api_client(key).get(f"{API}/artifact/{response.json()['id']}").status_code == 200


@pytest.mark.parametrize("assigned_to", ["nobody", "another worker"])
def test_worker_records_outputs_only_of_its_own_work(
    playground: Playground, user: User, assigned_to: str
) -> None:
    _, key = playground.create_worker("intruder")
    other = None if assigned_to == "nobody" else playground.create_worker("honest")[0]
    work_request = playground.create_work_request(created_by=user, worker=other)
    response = api_client(key).post(
        f"{API}/artifact/",
        {"category": "debusine:test", "files": {}, "data": {}, "work_request": work_request.pk},
        format="json",
    )
    assert "not assigned" in assert_problem(response, 403)["title"]
    assert not Artifact.objects.exists()


# --- Tokens -----------------------------------------------------------------------------------


def make_token(playground: Playground, kind: str) -> str:
    """The key of a token of `kind`; every one of them must be refused, saying why."""
    owner = playground.create_user(f"owner-{kind.replace(' ', '-')}")
    playground.grant(owner, playground.workspace)
    if kind == "unknown":
        return "0" * 64
    if kind == "disabled user":
        return playground.create_user_token(owner, enabled=False)
    if kind == "expired user":
        _, key = Token.objects.create_with_key(
            user=owner, enabled=True, expire_at=timezone.now() - timedelta(seconds=1)
        )
        return key
    if kind == "inactive user":
        owner.is_active = False
        owner.save()
        return playground.create_user_token(owner)
    if kind == "disabled worker":
        return playground.create_worker("off", enabled=False)[1]
    if kind == "expired worker":
        worker, key = playground.create_worker("late")
        assert worker.token is not None
        worker.token.expire_at = timezone.now() - timedelta(seconds=1)
        worker.token.save()
        return key
    if kind == "activation":
        _, key = Worker.objects.create_with_activation_token(
            "new.example.org", WorkerType.EXTERNAL
        )
        return key
    raise AssertionError(kind)


#: Each kind of token that is not valid: the status and title of its refusal.
REFUSED_KINDS = {
    "unknown": (401, "Invalid token"),
    "disabled user": (403, "Token disabled"),
    "expired user": (401, "Token expired"),
    "inactive user": (403, "Token disabled"),
    "disabled worker": (403, "Token disabled"),
    "expired worker": (401, "Token expired"),
    "activation": (403, "Activation token"),
}


@pytest.mark.parametrize("kind", REFUSED_KINDS)
def test_invalid_tokens_are_refused_saying_why(
    playground: Playground, user: User, kind: str
) -> None:
    key = make_token(playground, kind)
    client = api_client(key)
    private = playground.create_workspace("Private")
    hidden = playground.create_work_request(created_by=user, workspace=private)
    public = playground.create_work_request(created_by=user)
    status_code, title = REFUSED_KINDS[kind]

    # Never served as anonymous, not even what anonymous users may read.
    for response in (
        client.get(f"{API}/whoami/"),
        client.get(f"{API}/work-request/{public.pk}/"),
        client.get(f"{API}/work-request/{hidden.pk}/"),
        client.post(f"{API}/work-request/", {"task_name": "noop", "task_data": {}}, "json"),
        client.post(f"{API}/artifact/", {"category": "c", "files": {}, "data": {}}, "json"),
        client.get(f"{API}/work-request/get-next-for-worker/"),
        client.put(f"{API}/work-request/{public.pk}/completed/", {"result": "success"}, "json"),
    ):
        problem = assert_problem(response, status_code)
        assert problem["title"] == title, problem
        assert problem["status"] == status_code
        assert "token" in problem["detail"].lower() or "inactive" in problem["detail"]
        if status_code == 401:
            assert response["WWW-Authenticate"] == "Token"
    assert not Artifact.objects.exists()
    assert WorkRequest.objects.count() == 2
    public.refresh_from_db()
    assert public.status == "pending"


def test_disabled_worker_token_names_the_command_that_enables_it(playground: Playground) -> None:
    _, key = playground.create_worker("sleepy", enabled=False)
    problem = assert_problem(api_client(key).get(f"{API}/whoami/"), 403)
    assert "debusine-admin worker enable sleepy" in problem["detail"]


def test_no_token_is_anonymous(playground: Playground, user: User) -> None:
    public = playground.create_work_request(created_by=user)
    client = api_client()
    assert client.get(f"{API}/whoami/").json()["user"] == "<anonymous>"
    assert client.get(f"{API}/work-request/{public.pk}/").status_code == 200


def test_worker_token_cannot_act_as_a_user(playground: Playground, user: User) -> None:
    _, key = playground.create_worker()
    client = api_client(key)
    work_request = playground.create_work_request(created_by=user)
    url = f"{API}/work-request/{work_request.pk}/"
    assert client.get(f"{API}/whoami/").json()["user"] == "<anonymous>"
    assert_problem(client.post(f"{API}/work-request/", {"task_name": "noop"}, "json"), 403)
    assert_problem(client.patch(url, {"priority_adjustment": -1}, "json"), 403)
    assert_problem(client.post(f"{url}retry/", {}, "json"), 403)
    assert_problem(client.post(f"{url}abort/", {}, "json"), 403)
    assert_problem(
        client.post(f"{API}/artifact/", {"category": "c", "files": {}, "data": {}}, "json"), 403
    )
    work_request.refresh_from_db()
    assert (work_request.status, work_request.priority_adjustment) == ("pending", 0)


def test_user_token_is_never_a_worker(user: User, user_token: str) -> None:
    assert api_client(user_token).get(f"{API}/whoami/").json() == {
        "user": "alice",
        "auth": True,
        "worker_token": False,
    }


def test_token_of_a_user_and_a_worker_is_refused(playground: Playground, user: User) -> None:
    worker, key = playground.create_worker()
    assert worker.token is not None
    worker.token.user = user
    worker.token.save()
    for response in (
        api_client(key).get(f"{API}/whoami/"),
        api_client(key).get(f"{API}/work-request/"),
    ):
        assert_problem(response, 403)


@pytest.mark.parametrize("header", ["Token", "token", "TOKEN"])
def test_token_header_name_is_case_insensitive(user_token: str, header: str) -> None:
    # Header names reach Django upper-cased whatever their case on the wire; the test client
    # takes them as sent, so this checks the one spelling Django hands to the view.
    client = APIClient()
    response = client.get(f"{API}/whoami/", headers={header: user_token})
    assert response.json()["user"] == "alice"


# --- Private workspaces -----------------------------------------------------------------------


def same_problem(hidden: Any, missing: Any, hidden_id: int, missing_id: int) -> None:
    """Both are 404 problems whose bodies differ only by the id asked for."""
    assert_problem(hidden, 404)
    assert_problem(missing, 404)
    assert hidden.content.replace(str(hidden_id).encode(), b"ID") == missing.content.replace(
        str(missing_id).encode(), b"ID"
    )


REQUESTS: dict[str, Callable[[APIClient, str, int], Any]] = {
    "get work request": lambda c, api, pk: c.get(f"{api}/work-request/{pk}/"),
    "patch work request": lambda c, api, pk: c.patch(
        f"{api}/work-request/{pk}/", {"priority_adjustment": 0}, "json"
    ),
    "retry": lambda c, api, pk: c.post(f"{api}/work-request/{pk}/retry/", {}, "json"),
    "abort": lambda c, api, pk: c.post(f"{api}/work-request/{pk}/abort/", {}, "json"),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_hidden_work_requests_look_missing(
    playground: Playground, user: User, user_token: str, name: str
) -> None:
    owner = playground.create_user("owner")
    work_request = playground.create_work_request(
        created_by=owner, workspace=playground.create_workspace("Private")
    )
    send = REQUESTS[name]
    client = api_client(user_token)
    same_problem(
        send(client, API, work_request.pk),
        send(client, API, work_request.pk + 1000),
        work_request.pk,
        work_request.pk + 1000,
    )


def test_hidden_artifacts_and_workspaces_look_missing(
    playground: Playground, user_token: str
) -> None:
    private = playground.create_workspace("Private")
    artifact = playground.create_artifact(workspace=private)
    client = api_client(user_token)
    missing_id = artifact.pk + 1000
    same_problem(
        client.get(f"{API}/artifact/{artifact.pk}/"),
        client.get(f"{API}/artifact/{missing_id}/"),
        artifact.pk,
        missing_id,
    )
    same_problem(
        client.get(f"{API}/artifact-relation/", {"artifact": artifact.pk}),
        client.get(f"{API}/artifact-relation/", {"artifact": missing_id}),
        artifact.pk,
        missing_id,
    )
    for url, body in (
        (f"{API}/artifact/", {"category": "c", "files": {}, "data": {}}),
        (f"{API}/work-request/", {"task_name": "noop", "task_data": {}}),
    ):
        hidden = client.post(url, body | {"workspace": "Private"}, format="json")
        missing = client.post(url, body | {"workspace": "Absent"}, format="json")
        assert_problem(hidden, 404)
        assert hidden.content.replace(b"Private", b"NAME") == missing.content.replace(
            b"Absent", b"NAME"
        )


# --- Response shapes and status codes ---------------------------------------------------------


def assert_utc_datetimes(body: dict[str, Any], *fields: str) -> None:
    for field in fields:
        value = body[field]
        assert value is None or (isinstance(value, str) and value.endswith("Z")), (field, value)


def test_work_request_object_shape(
    user: User, user_token: str, start_work_request: Callable[..., WorkRequest]
) -> None:
    client = api_client(user_token)
    created = client.post(
        f"{API}/work-request/",
        {"task_name": "noop", "task_data": {"result": True}, "event_reactions": {}},
        format="json",
    )
    assert created.status_code == 200  # not 201 (protocol.md §8.2)
    body = created.json()
    WorkRequestResponse.model_validate(body)
    assert body["result"] == ""
    assert body["artifacts"] == []
    assert isinstance(body["task_data"], dict)
    assert_utc_datetimes(body, "created_at", "started_at", "completed_at")

    work_request = WorkRequest.objects.get()
    start_work_request(work_request)
    transitions.complete(work_request, "success")
    shown = client.get(f"{API}/work-request/{work_request.pk}/").json()
    assert shown["result"] == "success"
    assert isinstance(shown["duration"], float)
    assert_utc_datetimes(shown, "created_at", "started_at", "completed_at")
    page = client.get(f"{API}/work-request/").json()
    WorkRequestPage.model_validate(page)
    assert set(page) == {"next", "previous", "results"}


def test_artifact_urls_follow_the_forwarded_scheme_and_host(
    settings: Any, playground: Playground, user_token: str
) -> None:
    settings.ALLOWED_HOSTS = ["debusine.example.org"]
    artifact = playground.create_artifact(files=[FileSpec("dir/a b+c~d.deb", b"x")], complete=True)
    response = api_client(user_token).get(
        f"{API}/artifact/{artifact.pk}/",
        HTTP_HOST="debusine.example.org",
        HTTP_X_FORWARDED_PROTO="https",
    )
    body = response.json()
    ArtifactResponse.model_validate(body)
    base = f"https://debusine.example.org/debusine/System/artifact/{artifact.pk}/download/"
    assert body["download_tar_gz_url"] == f"{base}?archive=tar.gz"
    assert body["files"]["dir/a b+c~d.deb"]["url"] == f"{base}dir/a%20b+c~d.deb"
    assert body["url"] == f"/debusine/System/artifact/{artifact.pk}/"
    assert_utc_datetimes(body, "created_at", "expire_at")


def test_artifact_from_a_disallowed_host_is_refused_without_a_server_error(
    playground: Playground, user_token: str
) -> None:
    artifact = playground.create_artifact()
    response = api_client(user_token).get(
        f"{API}/artifact/{artifact.pk}/", HTTP_HOST="evil.example.com"
    )
    assert response.status_code == 400


def test_relation_status_codes_and_empty_delete_body(
    playground: Playground, user_token: str
) -> None:
    source = playground.create_artifact(files=[FileSpec("a", b"a")], complete=True)
    target = playground.create_artifact(files=[FileSpec("b", b"b")], complete=True)
    client = api_client(user_token)
    body = {"artifact": source.pk, "target": target.pk, "type": "built-using"}
    created = client.post(f"{API}/artifact-relation/", body, format="json")
    again = client.post(f"{API}/artifact-relation/", body, format="json")
    assert (created.status_code, again.status_code) == (201, 200)
    RelationResponse.model_validate(created.json())
    deleted = client.delete(f"{API}/artifact-relation/{created.json()['id']}/")
    assert deleted.status_code == 204
    assert deleted.content == b""
