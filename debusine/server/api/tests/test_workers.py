"""Tests of the worker endpoints: register, dynamic metadata, get-next, completed."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks
from rest_framework.test import APIClient

from debusine.protocol.generations import (
    USER_AGENT_GENERATION_KEY,
    Generation,
    generation_from_metadata,
)
from debusine.server.api.workers import CompletedResponse
from debusine.server.db.models import Token, User, Worker, WorkerType, WorkRequest
from debusine.server.db.models.auth import hash_token_key
from debusine.server.scheduler.matching import Candidate, can_run
from debusine.server.work_requests import notifications, transitions
from debusine.testing.playground import Playground, api_client

pytestmark = pytest.mark.django_db

REGISTER = "/api/1.0/worker/register/"
METADATA = "/api/1.0/worker/dynamic-metadata/"
GET_NEXT = "/api/1.0/work-request/get-next-for-worker/"


def completed_url(work_request_id: int) -> str:
    return f"/api/1.0/work-request/{work_request_id}/completed/"


def statements(queries: CaptureQueriesContext) -> list[str]:
    """The SQL statements run, without the savepoints of the test's own transaction."""
    return [
        query["sql"]
        for query in queries.captured_queries
        if not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
    ]


def assert_problem(response: object, status: int, title: str) -> None:
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response["Content-Type"] == "application/problem+json"  # type: ignore[index]
    assert response.json()["title"] == title  # type: ignore[attr-defined]


# --- register -----------------------------------------------------------------------------


def test_register_creates_a_disabled_worker() -> None:
    key = secrets.token_hex(32)

    response = APIClient().post(
        REGISTER, {"token": key, "fqdn": "builder.example.org"}, format="json"
    )

    assert response.status_code == 201
    assert response.content == b""
    worker = Worker.objects.get(name="builder-example-org")
    assert worker.worker_type == "external"
    assert worker.token is not None
    assert worker.token.hash == hash_token_key(key)
    assert not worker.token.enabled
    assert worker.concurrency == 1


def test_register_again_with_the_same_token_is_harmless() -> None:
    key = secrets.token_hex(32)
    for _ in range(2):
        response = APIClient().post(REGISTER, {"token": key, "fqdn": "a.b"}, format="json")
        assert response.status_code == 201
    assert Worker.objects.count() == 1


def test_register_names_are_unique_per_host() -> None:
    for _ in range(3):
        APIClient().post(
            REGISTER, {"token": secrets.token_hex(32), "fqdn": "h.example"}, format="json"
        )
    assert sorted(Worker.objects.values_list("name", flat=True)) == [
        "h-example",
        "h-example-2",
        "h-example-3",
    ]


def test_register_with_activation_token_enables_at_once() -> None:
    worker, activation_key = Worker.objects.create_with_activation_token("pool-1", "external")
    key = secrets.token_hex(32)

    response = api_client(activation_key).post(
        REGISTER,
        {"token": key, "fqdn": "ignored.example", "worker_type": "signing"},
        format="json",
    )

    assert response.status_code == 201
    worker.refresh_from_db()
    assert worker.token is not None and worker.token.enabled
    assert worker.token.hash == hash_token_key(key)
    assert worker.worker_type == "external"
    assert worker.activation_token is None
    assert not Token.objects.filter(hash=hash_token_key(activation_key)).exists()
    assert Worker.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"fqdn": "x"},
        {"token": "a" * 65, "fqdn": "x"},
        {"token": "k", "fqdn": "x", "worker_type": "robot"},
        {"token": "k", "fqdn": "x", "extra": 1},
        [],
    ],
)
def test_register_refuses_bad_bodies(body: object) -> None:
    response = APIClient().post(REGISTER, body, format="json")
    assert response.status_code == 400
    assert Worker.objects.count() == 0
    assert Token.objects.count() == 0


def test_register_refuses_a_user_token(playground: Playground, user: User) -> None:
    key = playground.create_user_token(user)
    response = APIClient().post(REGISTER, {"token": key, "fqdn": "x"}, format="json")
    assert_problem(response, 400, "Cannot register worker")
    assert Worker.objects.count() == 0


# --- dynamic metadata ---------------------------------------------------------------------


def test_dynamic_metadata_replaces_the_stored_one(playground: Playground) -> None:
    worker, key = playground.create_worker()
    client = api_client(key)
    client.put(METADATA, {"a": 1, "b": 2}, format="json")

    response = client.put(METADATA, {"system:cpu_count": 4}, format="json")

    assert response.status_code == 204
    assert response.content == b""
    worker.refresh_from_db()
    assert worker.dynamic_metadata == {"system:cpu_count": 4}
    assert worker.dynamic_metadata_updated_at is not None


def test_the_user_agent_names_the_generation_when_the_metadata_does_not(
    playground: Playground,
) -> None:
    worker, key = playground.create_worker()
    worker.set_static_metadata({"noop:version": 1, "sleep:version": 1})
    client = api_client(key)
    sleep = Candidate(1, "Worker", "sleep", None)

    # Metadata that shows no generation, from a 0.16 worker (its User-Agent says so).
    client.put(METADATA, {"system:cpu_count": 2}, format="json", HTTP_USER_AGENT="debusine/0.16.2")
    worker.refresh_from_db()
    assert worker.dynamic_metadata == {
        "system:cpu_count": 2,
        USER_AGENT_GENERATION_KEY: "0.16",
    }
    assert generation_from_metadata(worker.metadata()) is Generation.V0_16
    # A 0.16 worker is only given what can be expressed for it.
    assert can_run("external", worker.metadata(), Candidate(1, "Worker", "noop", None))
    assert not can_run("external", worker.metadata(), sleep)

    # Library defaults say nothing; a worker cannot write the server's key itself.
    client.put(
        METADATA,
        {"system:cpu_count": 2, USER_AGENT_GENERATION_KEY: "0.16"},
        format="json",
        HTTP_USER_AGENT="python-requests/2.28.1",
    )
    worker.refresh_from_db()
    assert worker.dynamic_metadata == {"system:cpu_count": 2}
    assert can_run("external", worker.metadata(), sleep)

    # What the metadata shows wins over the User-Agent.
    client.put(METADATA, {"noop:version": 1}, format="json", HTTP_USER_AGENT="debusine/0.16.2")
    worker.refresh_from_db()
    assert worker.dynamic_metadata == {"noop:version": 1}
    assert generation_from_metadata(worker.metadata()) is Generation.LEGACY


def test_dynamic_metadata_needs_an_enabled_worker_token(
    playground: Playground, user_token: str
) -> None:
    _worker, disabled_key = playground.create_worker(enabled=False)
    for token in (None, user_token, disabled_key):
        response = api_client(token).put(METADATA, {"a": 1}, format="json")
        assert response.status_code == 403


def test_dynamic_metadata_must_be_an_object(playground: Playground) -> None:
    _worker, key = playground.create_worker()
    response = api_client(key).put(METADATA, [1, 2], format="json")
    assert_problem(response, 400, "Invalid metadata")


# --- get-next -----------------------------------------------------------------------------


def test_get_next_without_work_is_204(playground: Playground) -> None:
    _worker, key = playground.create_worker()
    response = api_client(key).get(GET_NEXT)
    assert response.status_code == 204
    assert response.content == b""


def test_get_next_hands_over_the_assigned_work_request(playground: Playground, user: User) -> None:
    worker, key = playground.create_worker()
    other, _ = playground.create_worker("other")
    playground.create_work_request(created_by=user, worker=other)
    playground.create_work_request(created_by=user)
    mine = playground.create_work_request(
        created_by=user, worker=worker, task_data={"result": False}
    )

    with CaptureQueriesContext(connection) as queries:
        response = api_client(key).get(GET_NEXT)

    assert response.status_code == 200
    body = response.json()
    # Serialised before it starts, as Debusine does; it is running once handed over.
    assert (body["id"], body["status"], body["started_at"]) == (mine.pk, "pending", None)
    assert body["task_type"] == "Worker"
    assert body["task_data"] == {"result": False}
    assert body["workspace"] == "System"
    assert body["result"] == ""
    mine.refresh_from_db()
    assert mine.status == "running"
    assert mine.started_at is not None
    # Who calls, renewing its lease (a new token), taking the work request.
    assert len(statements(queries)) == 3
    # Nothing else for this worker.
    assert api_client(key).get(GET_NEXT).status_code == 204


def test_get_next_while_running_means_the_worker_restarted(
    playground: Playground, user: User
) -> None:
    worker, key = playground.create_worker()
    lost = playground.create_work_request(created_by=user, worker=worker, status="running")

    response = api_client(key).get(GET_NEXT)

    assert response.status_code == 204
    lost.refresh_from_db()
    assert lost.status == "aborted"
    retry = lost.superseded_by
    assert (retry.status, retry.worker) == ("pending", None)


def test_a_restarted_worker_gets_its_pending_work_after_the_retry(
    playground: Playground, user: User
) -> None:
    worker, key = playground.create_worker()
    lost = playground.create_work_request(created_by=user, worker=worker, status="running")
    waiting = playground.create_work_request(created_by=user, worker=worker)

    response = api_client(key).get(GET_NEXT)

    assert response.status_code == 200
    assert response.json()["id"] == waiting.pk
    lost.refresh_from_db()
    assert lost.status == "aborted"
    assert lost.superseded_by.status == "pending"


def test_get_next_is_for_workers_only(playground: Playground, user_token: str) -> None:
    assert api_client(user_token).get(GET_NEXT).status_code == 403
    assert APIClient().get(GET_NEXT).status_code == 403


# --- completed ----------------------------------------------------------------------------


@pytest.fixture
def running(playground: Playground, user: User) -> tuple[WorkRequest, str]:
    worker, key = playground.create_worker()
    work_request = playground.create_work_request(created_by=user, worker=worker, status="running")
    return work_request, key


def test_completed_records_the_outcome(running: tuple[WorkRequest, str]) -> None:
    work_request, key = running
    statistics = {"duration": 3, "cpu_time": 1}

    with CaptureQueriesContext(connection) as queries:
        response = api_client(key).put(
            completed_url(work_request.pk),
            {"result": "failure", "output_data": {"runtime_statistics": statistics}},
            format="json",
        )

    assert response.status_code == 200
    assert response.content == b""
    work_request.refresh_from_db()
    assert (work_request.status, work_request.result) == ("completed", "failure")
    assert work_request.completed_at is not None
    assert work_request.output_data_json == {"runtime_statistics": statistics}
    # Who calls, renewing its lease (a new token), one UPDATE, then a scheduling pass for the
    # worker alone (the scheduler's lock, is it idle: it is not connected, so no more).
    assert len(statements(queries)) == 5


def test_completion_gives_the_worker_its_next_work_request(
    playground: Playground,
    user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    settings.DEBUSINE_WORKER_NOTIFY_AFTER_COMPLETION = 0.125
    told: list[tuple[list[int], float]] = []
    monkeypatch.setattr(
        notifications,
        "notify_work_request_assigned",
        lambda worker_ids, delay=0.0: told.append((sorted(worker_ids), delay)),
    )
    worker = playground.create_connected_worker()
    key = playground.worker_keys[worker.pk]
    finished = playground.create_work_request(created_by=user, worker=worker, status="running")
    waiting = playground.create_work_request(created_by=user)
    other = playground.create_connected_worker("other", metadata={})

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api_client(key).put(
            completed_url(finished.pk), {"result": "success"}, format="json"
        )

    assert response.status_code == 200
    waiting.refresh_from_db()
    assert (waiting.status, waiting.worker) == ("pending", worker)
    # Once this commits, the answer learns that the worker was given work (and no pass is
    # queued for the scheduler)...
    names = [getattr(callback, "__qualname__", "") for callback in callbacks]
    assert names[0] == "CompletedResponse.next_work"
    assert "_scheduling_pass.<locals>.<lambda>" not in names  # not told at the commit
    assert "run_or_enqueue_scheduling_pass" not in names
    assert other.assigned_work_requests.count() == 0
    # ... and tells the worker once it has been sent (Django closes it then), after the delay.
    assert isinstance(response, CompletedResponse)
    response.next_work_assigned = False  # the test client closed it before the commit ran
    [next_work] = [c for c in callbacks if getattr(c, "__qualname__", "") == names[0]]
    next_work()
    assert told == []
    response.close()
    assert told == [([worker.pk], 0.125)]
    response.close()
    assert told == [([worker.pk], 0.125)]


def test_completion_with_nothing_waiting_tells_the_worker_nothing(
    playground: Playground,
    user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told: list[list[int]] = []
    monkeypatch.setattr(
        notifications,
        "notify_work_request_assigned",
        lambda worker_ids, delay=0.0: told.append(sorted(worker_ids)),
    )
    worker = playground.create_connected_worker()
    key = playground.worker_keys[worker.pk]
    finished = playground.create_work_request(created_by=user, worker=worker, status="running")

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client(key).put(
            completed_url(finished.pk), {"result": "success"}, format="json"
        )

    assert response.status_code == 200
    response.close()
    assert told == []


def test_stale_completion_changes_nothing(running: tuple[WorkRequest, str], user: User) -> None:
    work_request, key = running
    transitions.abort(work_request, user)

    response = api_client(key).put(
        completed_url(work_request.pk), {"result": "success"}, format="json"
    )

    assert response.status_code == 200
    assert response.content == b""
    work_request.refresh_from_db()
    assert (work_request.status, work_request.result) == ("aborted", "")


def test_completion_of_another_workers_work_is_refused(
    running: tuple[WorkRequest, str], playground: Playground
) -> None:
    work_request, _key = running
    _other, other_key = playground.create_worker("other")

    response = api_client(other_key).put(
        completed_url(work_request.pk), {"result": "success"}, format="json"
    )

    assert_problem(response, 401, "Invalid worker to update the work request")
    work_request.refresh_from_db()
    assert work_request.status == "running"


def test_completion_of_a_missing_work_request_is_404(playground: Playground) -> None:
    _worker, key = playground.create_worker()
    response = api_client(key).put(completed_url(999999), {"result": "success"}, format="json")
    assert_problem(response, 404, "Work request 999999 not found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"result": "great"},
        {"result": "success", "output_data": {"runtime_statistics": {"duration": "x"}}},
        {"result": "success", "output_data": {"surprise": 1}},
        {"result": "success", "extra": 1},
    ],
)
def test_completion_refuses_bad_bodies(running: tuple[WorkRequest, str], body: object) -> None:
    work_request, key = running
    response = api_client(key).put(completed_url(work_request.pk), body, format="json")
    assert response.status_code == 400
    work_request.refresh_from_db()
    assert work_request.status == "running"


def test_completion_unblocks_dependants(running: tuple[WorkRequest, str], user: User) -> None:
    work_request, key = running
    dependant = WorkRequest.objects.create(
        workspace=work_request.workspace,
        created_by=user,
        task_name="noop",
        status="blocked",
    )
    dependant.dependencies.add(work_request)

    api_client(key).put(completed_url(work_request.pk), {"result": "success"}, format="json")

    dependant.refresh_from_db()
    assert dependant.status == "pending"


def test_worker_views_refuse_other_methods_with_a_problem(
    running: tuple[WorkRequest, str],
) -> None:
    work_request, key = running
    client = api_client(key)

    # (get-next takes GET, and POST since Debusine 0.16.)
    assert_problem(client.put(GET_NEXT, {}, format="json"), 405, "Error")
    assert_problem(client.get(completed_url(work_request.pk)), 405, "Error")
    work_request.refresh_from_db()
    assert work_request.status == "running"


def test_completion_with_a_body_that_is_not_json(running: tuple[WorkRequest, str]) -> None:
    work_request, key = running

    response = api_client(key).put(
        completed_url(work_request.pk), b"{not json", content_type="application/json"
    )

    assert_problem(response, 400, "Cannot parse the request body")
    work_request.refresh_from_db()
    assert work_request.status == "running"


@pytest.mark.parametrize("kind", ["unknown", "expired activation", "disabled activation"])
def test_register_with_a_token_that_is_not_a_valid_activation_token_is_refused(
    playground: Playground, kind: str
) -> None:
    if kind == "unknown":
        key = "0" * 64
    else:
        worker, key = Worker.objects.create_with_activation_token(
            "pre.example.org", WorkerType.EXTERNAL
        )
        assert worker.activation_token is not None
        if kind == "expired activation":
            worker.activation_token.expire_at = timezone.now() - timedelta(seconds=1)
            worker.activation_token.save()
        else:
            worker.activation_token.enabled = False
            worker.activation_token.save()
    workers_before = Worker.objects.count()

    response = api_client(key).post(
        REGISTER, {"token": "b" * 64, "fqdn": "new.example.org"}, format="json"
    )

    assert response.status_code in (401, 403)
    assert response["Content-Type"] == "application/problem+json"
    assert "token" in response.json()["detail"].lower()
    assert Worker.objects.count() == workers_before


# --- Debusine 0.16 workers ------------------------------------------------------------------


def test_post_get_next_hands_over_the_016_shape_and_the_tasks_token(
    playground: Playground, user: User
) -> None:
    worker, key = playground.create_worker()
    mine = playground.create_work_request(
        created_by=user, worker=worker, task_data={"result": False}
    )
    mine.dynamic_task_data = {"task_configuration_id": 3, "subject": "hello"}
    mine.save(update_fields=["dynamic_task_data"])

    response = api_client(key).post(GET_NEXT, {}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == mine.pk
    # 0.16 models: a result string, no task_configuration_id, task_input_fields.
    assert body["task_data"] == {"result": "failure"}
    assert body["dynamic_task_data"] == {"subject": "hello", "task_input_fields": {}}
    assert body["scope"] == "debusine"
    assert body["links"]["webui_self"] == body["url"]
    mine.refresh_from_db()
    assert mine.status == "running"
    # A token of the task's own: stored hashed, expiring, not the worker's.
    task_key = body["token"]
    assert isinstance(task_key, str) and task_key != key
    assert mine.task_token is not None
    assert mine.task_token.hash == hash_token_key(task_key)
    assert mine.task_token.expire_at is not None
    assert mine.task_token.expire_at > timezone.now() + timedelta(days=6)
    # The task's calls authenticate with it and the scope header.
    task = api_client(task_key)
    artifact = task.get(
        f"/api/1.0/artifact/System/{playground.create_artifact().pk}/",
        HTTP_X_DEBUSINE_SCOPE=body["scope"],
    )
    assert artifact.status_code == 200, artifact.content
    done = task.put(
        completed_url(mine.pk),
        {"result": "success"},
        format="json",
        HTTP_X_DEBUSINE_SCOPE="debusine",
    )
    assert done.status_code == 200, done.content
    mine.refresh_from_db()
    assert (mine.status, mine.result) == ("completed", "success")
    # Revoked on completion.
    assert mine.task_token is None
    assert not Token.objects.filter(hash=hash_token_key(task_key)).exists()
    assert task.get(f"/api/1.0/work-request/{mine.pk}/").status_code in (401, 403)
    # The worker's own token still works.
    assert api_client(key).post(GET_NEXT, {}, format="json").status_code == 204


def test_post_get_next_without_work_is_204(playground: Playground) -> None:
    _worker, key = playground.create_worker()
    response = api_client(key).post(GET_NEXT, {}, format="json")
    assert response.status_code == 204


def test_temporary_failure_retries_the_work_request(running: tuple[WorkRequest, str]) -> None:
    work_request, key = running
    statistics = {"duration": 3, "duration_setup": 0.5, "network_received": 10}

    response = api_client(key).put(
        completed_url(work_request.pk),
        {"result": "temporary failure", "output_data": {"runtime_statistics": statistics}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.content == b""
    work_request.refresh_from_db()
    assert work_request.status == "aborted"
    output_data = work_request.output_data_json
    assert output_data is not None
    assert output_data["errors"][-1]["code"] == "worker-failed"
    assert output_data["runtime_statistics"]["duration_setup"] == 0.5
    retry = work_request.superseded_by
    assert retry is not None and retry.status == "pending"

    # Reported again (a replay): stale, harmless.
    again = api_client(key).put(
        completed_url(work_request.pk), {"result": "temporary failure"}, format="json"
    )
    assert again.status_code == 200
    assert again.content == b""


def test_016_clients_get_problems_with_only_the_keys_they_accept(
    playground: Playground,
) -> None:
    _worker, key = playground.create_worker()
    old = api_client(key).put(GET_NEXT, {}, format="json")
    new = api_client(key).put(GET_NEXT, {}, format="json", HTTP_USER_AGENT="debusine/0.16.2")

    assert old.json() == {"title": "Error", "detail": 'Method "PUT" not allowed.', "status": 405}
    assert new.status_code == 405
    assert new["Content-Type"] == "application/problem+json"
    assert new.json() == {
        "title": "Error",
        "detail": 'Method "PUT" not allowed.',
        "status_code": 405,
    }
