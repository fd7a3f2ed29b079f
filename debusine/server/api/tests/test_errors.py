"""Tests of the problem+json error path shared by every API view."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from debusine.server.api.errors import PROBLEM_CONTENT_TYPE, ProblemError
from debusine.server.db.models import Scope, User, WorkRequest
from debusine.server.project import urls as project_urls
from debusine.testing.playground import Playground, api_client


class WritesThenFails(APIView):
    """A view that changes the database and then reports bad input."""

    authentication_classes = []

    def post(self, request: Request) -> Response:
        Scope.objects.create(name="should-not-exist")
        raise ProblemError("Bad input", "nothing may change", status_code=400)


@pytest.mark.django_db(transaction=True)
def test_problem_error_rolls_back_the_request_transaction() -> None:
    assert connection.settings_dict["ATOMIC_REQUESTS"]
    view = WritesThenFails.as_view()
    # ATOMIC_REQUESTS wraps views in BaseHandler; here we wrap the view the same way.
    request = APIRequestFactory().post("/api/1.0/x/", {}, format="json")
    with transaction.atomic():
        response = view(request)
    response.render()
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert response.data == {"title": "Bad input", "detail": "nothing may change", "status": 400}
    assert not Scope.objects.filter(name="should-not-exist").exists()


# --- Every error under /api/, from Django and middleware included, is a problem --------------


def explode(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("kaboom in a view")


def session_form(request: HttpRequest) -> HttpResponse:
    """A plain view that is not CSRF-exempt (what a session-authenticated form would be)."""
    return HttpResponse("posted")


# This module is also the URL configuration of the tests below: the project's URLs plus two
# views no production URL has (one that fails, one that CSRF protects), with its error views.
urlpatterns = [
    path("api/test-only/explode/", explode),
    path("api/test-only/form/", session_form),
    *project_urls.urlpatterns,
]
handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500


def assert_problem(response: Any, status_code: int, title: str | None = None) -> dict[str, Any]:
    """A problem document with `title`, a detail and the status, and nothing else about it."""
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = json.loads(response.content)
    assert isinstance(body["title"], str) and body["title"]
    if title is not None:
        assert body["title"] == title, body
    assert body["status"] == status_code
    assert "detail" in body
    assert b"<html" not in response.content.lower()
    return body


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def django_records() -> Iterator[list[logging.LogRecord]]:
    """
    What Django's loggers emit, as configured (they do not propagate to the root logger
    caplog listens to): a record below a logger's level is not there.
    """
    recorder = Recorder()
    loggers = [
        logging.getLogger(name)
        # django.request propagates to django; the RequestDataTooBig logger does not.
        for name in ("django", "django.security.RequestDataTooBig")
    ]
    for logger in loggers:
        logger.addHandler(recorder)
    yield recorder.records
    for logger in loggers:
        logger.removeHandler(recorder)


pytestmark_urls = pytest.mark.urls("debusine.server.api.tests.test_errors")


@pytestmark_urls
def test_every_kind_of_error_under_the_api_is_a_problem(
    playground: Playground, user: User, user_token: str, settings: Any
) -> None:
    client = api_client(user_token)
    work_request = playground.create_work_request(created_by=user)
    api = "/api/1.0"

    # 400: a body that is not JSON, through DRF and through a plain (hot path) view.
    bad_json = client.generic("POST", f"{api}/work-request/", "{nope", "application/json")
    assert_problem(bad_json, 400, "Cannot parse the request body")
    _, worker_key = playground.create_worker()
    completed = api_client(worker_key).generic(
        "PUT", f"{api}/work-request/{work_request.pk}/completed/", "{nope", "application/json"
    )
    assert_problem(completed, 400, "Cannot parse the request body")

    # 404: unknown URLs, ids that are not numbers, unknown objects, unknown scopes.
    for url in (
        "/api/nothing-here/",
        f"{api}/nothing-here/",
        f"{api}/work-request/abc/",
        f"{api}/artifact/12x/",
        f"{api}/work-request/{work_request.pk}/abc/",
        "/api/",
    ):
        assert_problem(client.get(url), 404)
    assert_problem(client.get(f"{api}/work-request/999999/"), 404)

    # 405: a DRF view, a plain view.
    assert_problem(client.delete(f"{api}/work-request/"), 405)
    assert_problem(api_client(worker_key).put(f"{api}/work-request/get-next-for-worker/"), 405)

    # 413: JSON bodies over the limit, read by DRF's parser and by a plain view.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = {"task_name": "noop", "task_data": {"padding": "x" * 2000}}
    too_big = client.post(f"{api}/work-request/", big, format="json")
    assert "1000 bytes" in assert_problem(too_big, 413, "Request body too large")["detail"]
    completed = api_client(worker_key).put(
        f"{api}/work-request/{work_request.pk}/completed/",
        {"result": "success", "output_data": {"skip_reason": "x" * 2000}},
        format="json",
    )
    assert "1000 bytes" in assert_problem(completed, 413, "Request body too large")["detail"]
    assert WorkRequest.objects.count() == 1
    work_request.refresh_from_db()
    assert work_request.status == "pending"


@pytestmark_urls
def test_a_body_over_the_limit_is_a_413_without_a_logged_error(
    playground: Playground,
    user_token: str,
    settings: Any,
    django_records: list[logging.LogRecord],
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client = api_client(user_token)
    body = json.dumps({"task_name": "noop", "task_data": {"x": "y" * 5000}})
    _, worker_key = playground.create_worker()

    # request.body read by a view: Django's own RequestDataTooBig.
    response = Client(headers={"Token": worker_key}).generic(
        "PUT", "/api/1.0/work-request/1/completed/", body, "application/json"
    )
    assert_problem(response, 413, "Request body too large")
    drf_response = client.generic("POST", "/api/1.0/work-request/", body, "application/json")
    assert_problem(drf_response, 413, "Request body too large")

    assert [record for record in django_records if record.levelno >= logging.ERROR] == []
    assert not WorkRequest.objects.exists()


@pytestmark_urls
def test_an_unhandled_exception_is_a_500_problem_logged_once(
    db: None, django_records: list[logging.LogRecord]
) -> None:
    response = Client(raise_request_exception=False).get("/api/test-only/explode/")

    assert_problem(response, 500, "Internal server error")
    assert b"kaboom" not in response.content  # details stay in the log
    errors = [record for record in django_records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert errors[0].exc_info is not None and "kaboom" in str(errors[0].exc_info[1])


@pytestmark_urls
def test_csrf_failure_under_the_api_is_a_problem(db: None) -> None:
    client = Client(enforce_csrf_checks=True)
    problem = assert_problem(
        client.post("/api/test-only/form/", {"a": "b"}), 403, "CSRF verification failed"
    )
    assert "CSRF" in problem["detail"]
    # The same view without the CSRF check: the view itself is fine.
    assert Client().post("/api/test-only/form/", {"a": "b"}).status_code == 200


@pytestmark_urls
def test_errors_outside_the_api_stay_django_pages(db: None) -> None:
    response = Client(raise_request_exception=False).get("/no/such/page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_success_bodies_are_never_touched(playground: Playground) -> None:
    _, key = playground.create_worker()
    response = api_client(key).get("/api/1.0/work-request/get-next-for-worker/")
    assert response.status_code == 204
    assert response.content == b""
