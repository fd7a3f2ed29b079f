"""
API views used by workers (protocol.md §1.3, §2.1): registration, dynamic metadata, fetching
the next work request and reporting its completion.

Workers never send a scope header; they act in the default scope. Every call from a worker
also renews its lease (through its token's `last_seen_at`, see `debusine.server.api.auth`).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.request import Request
from rest_framework.views import APIView

from debusine.protocol.generations import (
    CannotExpressError,
    Generation,
    dynamic_data_for,
    task_data_for,
    with_user_agent_generation,
)
from debusine.protocol.work_requests import WorkRequestStatus
from debusine.protocol.workers import WorkerRegisterRequest, WorkRequestCompletedRequest
from debusine.server.api.auth import (
    TOKEN_HEADER,
    IsWorker,
    authenticate_token,
    refuse_token,
    request_worker,
    token_from_request,
)
from debusine.server.api.errors import ProblemError, plain_problem_response
from debusine.server.api.parsing import parse_body, parse_json_body
from debusine.server.db.models import Token, Worker, WorkRequest
from debusine.server.db.models.auth import hash_token_key
from debusine.server.work_requests import notifications, serialization, transitions
from debusine.server.work_requests.transitions import Completion
from debusine.server.work_requests.worker_tokens import (
    WorkerCaller,
    mint_task_token,
    resolve_worker_token,
    revoke_task_token,
)


def activation_refusal(request: HttpRequest, token: Token | None) -> ProblemError:
    """Why the token sent to register is not a usable activation token (counted as a refusal)."""
    if token is not None and token.is_usable():
        return ProblemError(
            "Cannot register worker",
            "The token in the Token header is not an activation token.",
            status_code=status.HTTP_403_FORBIDDEN,
        )
    return refuse_token(request, token)


class WorkerRegisterView(APIView):
    """
    `POST`: register a worker under the token it generated: 201 with an empty body.

    With an activation token in the `Token` header (from `debusine-admin worker create`), the
    pre-created worker takes the new token, enabled at once, and the activation token is used
    up. Otherwise a new worker is created with its token disabled, for an admin to enable.
    """

    permission_classes: list[Any] = []
    authentication_classes: list[Any] = []

    def post(self, request: Request) -> HttpResponse:
        body = parse_body(request, WorkerRegisterRequest, title="Cannot deserialize worker")
        activation = token_from_request(request._request)
        if activation is not None and activation.is_usable():
            worker = Worker.objects.filter(activation_token=activation).first()
            if worker is not None:
                self.activate(worker, activation, body.token)
                return HttpResponse(status=status.HTTP_201_CREATED)
        if (request.META.get(TOKEN_HEADER) or "").strip():
            # Workers send a token here only from their activation-token file: one that is
            # unknown, expired or already used must not quietly register a disabled worker.
            raise activation_refusal(request._request, activation)
        self.register(body)
        return HttpResponse(status=status.HTTP_201_CREATED)

    @staticmethod
    def activate(worker: Worker, activation: Token, key: str) -> None:
        token = Token.objects.filter(hash=hash_token_key(key)).first()
        if token is not None and (token.user_id is not None or hasattr(token, "worker")):
            raise ProblemError("Cannot register worker", "This token is already in use.")
        if token is None:
            token, _key = Token.objects.create_with_key(
                key, enabled=True, comment=f"Worker {worker.name}"
            )
        else:
            token.enable()
        worker.token = token
        worker.activation_token = None
        worker.registered_at = token.created_at
        worker.save(update_fields=["token", "activation_token", "registered_at"])
        activation.delete()

    @staticmethod
    def register(body: WorkerRegisterRequest) -> None:
        token = Token.objects.filter(hash=hash_token_key(body.token)).first()
        if token is not None:
            if hasattr(token, "worker"):
                return  # the same worker registering again: nothing to do
            if token.user_id is not None or hasattr(token, "activating_worker"):
                raise ProblemError("Cannot register worker", "This token is already in use.")
        else:
            token, _key = Token.objects.create_with_key(
                body.token, enabled=False, comment=f"Worker {body.fqdn}"
            )
        # Two workers of one host may register at once: retry on a name collision.
        for _attempt in range(5):
            try:
                with transaction.atomic():
                    Worker.objects.create_from_fqdn(body.fqdn, body.worker_type, token=token)
                return
            except IntegrityError:
                continue
        raise ProblemError(
            "Cannot register worker",
            f"No free worker name for {body.fqdn}",
            status_code=status.HTTP_409_CONFLICT,
        )


class DynamicMetadataView(APIView):
    """`PUT`: replace the calling worker's dynamic metadata: 204 with an empty body."""

    permission_classes = [IsWorker]

    def put(self, request: Request) -> HttpResponse:
        if not isinstance(request.data, dict):
            raise ProblemError("Invalid metadata", "The body must be a JSON object.")
        caller = request_worker(request)
        assert caller is not None
        worker = Worker.objects.get(pk=caller.id)
        transitions.worker_metadata_changed(
            worker,
            dynamic=with_user_agent_generation(request.data, request.headers.get("User-Agent")),
        )
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)


# --- The worker's hot path: plain Django views over single SQL statements -------------------
#
# A worker calls these twice per work request. They skip DRF (content negotiation, parsers,
# permission classes) and the ORM: see the SQL fast paths of
# debusine.server.work_requests.transitions.


def calling_worker(request: HttpRequest) -> WorkerCaller:
    """
    The worker behind the request's token, or a problem: the token's refusal (401/403/429)
    when it is not valid, 403 when it is valid but not a worker's.
    """
    worker = resolve_worker_token(request.META.get(TOKEN_HEADER))
    if worker is None:
        # Off the hot path: say why, as the DRF views do.
        authenticate_token(request)
        raise ProblemError("Error", IsWorker.message, status_code=status.HTTP_403_FORBIDDEN)
    return worker


def worker_view(
    *methods: str,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """
    A plain Django view for one HTTP method, CSRF-exempt (token-authenticated), whose
    ProblemErrors become problem+json responses as in the DRF views.
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise ProblemError(
                        "Error", f'Method "{request.method}" not allowed.', status_code=405
                    )
                return view(request, *args, **kwargs)
            except ProblemError as error:
                return plain_problem_response(error)

        return wrapper

    return decorate


@worker_view("GET", "POST")
def get_next_for_worker(request: HttpRequest) -> HttpResponse:
    """
    `GET` (Debusine 0.11/0.12) or `POST` with `{}` (0.16): the next work request assigned to
    the calling worker (200), or 204 when none is.

    The work request is serialised as it was before it started (as Debusine does) and is
    running once handed over. A worker asking for work while already running as many work
    requests as its concurrency allows has restarted: those are aborted and retried
    (worker-failed).

    A 0.16 worker (it POSTs) gets its task data and dynamic data in the 0.16 shape
    (`debusine.protocol.generations`), and the `token` and `scope` its task authenticates
    with: the worker's own token, which the endpoints the task calls accept.
    """
    worker = calling_worker(request)
    started = transitions.start_next(worker)
    if started is None:
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)
    if request.method != "POST":
        return serialization.json_response(started)
    generation = Generation.V0_16
    body = started.model_dump(mode="json")
    # The scheduler gives 0.16 workers only what can be expressed; else ours is sent as is.
    with contextlib.suppress(CannotExpressError):
        body["task_data"] = task_data_for(
            generation, started.task_type, started.task_name, started.task_data
        )
    body["dynamic_task_data"] = dynamic_data_for(
        generation, started.task_name, started.task_data, started.dynamic_task_data
    )
    body["token"] = mint_task_token(started.id, worker.name)
    return HttpResponse(json.dumps(body), content_type="application/json")


class CompletedResponse(HttpResponse):
    """
    The answer to a completion report, which tells the worker about its next work request
    (`work_request_available`) only once it has been sent, and
    DEBUSINE_WORKER_NOTIFY_AFTER_COMPLETION seconds later.

    Debusine's worker (0.11.3: protocol.md §4.2 steps 5 and 9) holds its task lock until it has
    read this answer; a `work_request_available` that arrives before makes it sleep a whole
    second before asking (and blocks its websocket meanwhile): told after the answer, it asks at
    once. Django closes a response after its last byte went out (also under ASGI).
    """

    def __init__(self, worker_id: int) -> None:
        super().__init__(status=status.HTTP_200_OK)
        self.worker_id = worker_id
        self.next_work_assigned = False

    def next_work(self) -> None:
        """Called once the transaction that gave the worker more work has committed."""
        self.next_work_assigned = True

    def close(self) -> None:
        super().close()
        if self.next_work_assigned:
            self.next_work_assigned = False
            notifications.notify_work_request_assigned(
                [self.worker_id], delay=settings.DEBUSINE_WORKER_NOTIFY_AFTER_COMPLETION
            )


@worker_view("PUT")
def work_request_completed(request: HttpRequest, work_request_id: int) -> HttpResponse:
    """
    `PUT`: the worker reports the outcome of its work request: 200 with an empty body.

    A report about a work request that is no longer pending or running (aborted, retried after
    the worker lost its lease, completed already) is stale: answered 200, and nothing changes.
    A report about a pending or running work request of another worker is refused (401).
    """
    worker = calling_worker(request)
    body = parse_json_body(request.body, WorkRequestCompletedRequest, "Invalid completion")
    output_data = (
        body.output_data.model_dump(mode="json", exclude_none=True)
        if body.output_data is not None
        else None
    )
    if body.result == WorkRequestCompletedRequest.TEMPORARY_FAILURE:
        answer = temporary_failure(worker, work_request_id, output_data)
        if worker.task_of_work_request is not None:
            revoke_task_token(work_request_id)
        return answer
    response = CompletedResponse(worker.id)
    outcome = transitions.complete_from_worker(
        worker.id, work_request_id, body.result, output_data, on_next_work=response.next_work
    )
    if outcome is Completion.NOT_FOUND:
        raise ProblemError(f"Work request {work_request_id} not found", status_code=404)
    if outcome is Completion.NOT_ASSIGNED:
        raise ProblemError(
            "Invalid worker to update the work request",
            f"Work request {work_request_id} is not assigned to worker {worker.name}",
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    if worker.task_of_work_request is not None:
        # Reported with the task's own token (a 0.16 worker): the task is over, so is its
        # token. (Old workers have none: their hot path costs no statement more.)
        revoke_task_token(work_request_id)
    return response


def temporary_failure(
    worker: WorkerCaller, work_request_id: int, output_data: dict[str, Any] | None
) -> HttpResponse:
    """
    A 0.16 worker's `temporary failure`: the work request is aborted and retried (counted as
    an automatic retry, like a worker failure). Stale reports change nothing (200, as always).
    """
    with transaction.atomic():
        work_request = WorkRequest.objects.select_for_update().filter(pk=work_request_id).first()
        if work_request is None:
            raise ProblemError(f"Work request {work_request_id} not found", status_code=404)
        if work_request.status != WorkRequestStatus.RUNNING:
            return HttpResponse(status=status.HTTP_200_OK)
        if work_request.worker_id != worker.id:
            raise ProblemError(
                "Invalid worker to update the work request",
                f"Work request {work_request_id} is not assigned to worker {worker.name}",
                status_code=status.HTTP_401_UNAUTHORIZED,
            )
        if output_data:
            work_request.output_data_json = output_data
            work_request.save(update_fields=["output_data_json"])
        transitions.retry_after_worker_failure(
            work_request, f"worker {worker.name} reported a temporary failure"
        )
    return HttpResponse(status=status.HTTP_200_OK)


urlpatterns: list[URLPattern] = [
    path("worker/register/", WorkerRegisterView.as_view(), name="api-worker-register"),
    path(
        "worker/dynamic-metadata/",
        DynamicMetadataView.as_view(),
        name="api-worker-dynamic-metadata",
    ),
    path(
        "work-request/get-next-for-worker/",
        get_next_for_worker,
        name="api-work-request-get-next",
    ),
    path(
        "work-request/<int:work_request_id>/completed/",
        work_request_completed,
        name="api-work-request-completed",
    ),
]
