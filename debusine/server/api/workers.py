"""
API views used by workers (protocol.md §1.3, §2.1): registration, dynamic metadata, fetching
the next work request and reporting its completion.

Workers never send a scope header; they act in the default scope. Every call from a worker
also renews its lease (through its token's `last_seen_at`, see `debusine.server.api.auth`).
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpResponse
from django.urls import URLPattern, path
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from debusine.protocol.workers import WorkerRegisterRequest, WorkRequestCompletedRequest
from debusine.server.api.auth import IsWorker, request_worker, token_from_request
from debusine.server.api.errors import ProblemError
from debusine.server.api.parsing import parse_body
from debusine.server.api.work_requests import work_request_json
from debusine.server.db.models import Token, Worker, WorkRequest
from debusine.server.db.models.auth import hash_token_key


def current_worker(request: Request) -> Worker:
    """The worker behind a request that passed IsWorker."""
    worker = request_worker(request)
    assert worker is not None
    return worker


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
        current_worker(request).set_dynamic_metadata(request.data)
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)


class GetNextForWorkerView(APIView):
    """
    `GET`: the next work request assigned to the calling worker (200), or 204 when none is.

    The work request is serialised while still pending (as Debusine does) and then marked
    running. A worker asking for work while already running as many work requests as its
    concurrency allows has restarted: those are aborted and retried (worker-failed).
    """

    permission_classes = [IsWorker]

    def get(self, request: Request) -> Response | HttpResponse:
        worker = current_worker(request)
        running = list(
            WorkRequest.objects.select_for_update()
            .filter(worker=worker, status="running")
            .order_by("id")
        )
        if running and len(running) >= worker.concurrency:
            for lost in running:
                lost.retry_after_worker_failure(
                    f"worker {worker.name} asked for new work while running this one: it restarted"
                )
        work_request = (
            WorkRequest.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(worker=worker, status="pending")
            .select_related("workspace__scope")
            .with_artifact_ids()
            .order_by((F("priority_base") + F("priority_adjustment")).desc(), "created_at", "id")
            .first()
        )
        if work_request is None:
            return HttpResponse(status=status.HTTP_204_NO_CONTENT)
        body = work_request_json(work_request, configured_task_data=True)
        work_request.mark_running()
        return Response(body, status=status.HTTP_200_OK)


class WorkRequestCompletedView(APIView):
    """
    `PUT`: the worker reports the outcome of its work request: 200 with an empty body.

    A report about a work request that is no longer pending or running (aborted, retried after
    the worker lost its lease, completed already) is stale: answered 200, and nothing changes.
    A report about a pending or running work request of another worker is refused (401).
    """

    permission_classes = [IsWorker]

    def put(self, request: Request, work_request_id: int) -> HttpResponse:
        worker = current_worker(request)
        body = parse_body(request, WorkRequestCompletedRequest, title="Invalid completion")
        work_request = WorkRequest.objects.select_for_update().filter(pk=work_request_id).first()
        if work_request is None:
            raise ProblemError(
                f"Work request {work_request_id} not found",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        if work_request.worker_id != worker.pk:
            if work_request.status in ("pending", "running"):
                raise ProblemError(
                    "Invalid worker to update the work request",
                    f"Work request {work_request_id} is not assigned to worker {worker.name}",
                    status_code=status.HTTP_401_UNAUTHORIZED,
                )
            return HttpResponse(status=status.HTTP_200_OK)
        output_data = (
            body.output_data.model_dump(mode="json", exclude_none=True)
            if body.output_data is not None
            else None
        )
        work_request.mark_completed(body.result, output_data)
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
        GetNextForWorkerView.as_view(),
        name="api-work-request-get-next",
    ),
    path(
        "work-request/<int:work_request_id>/completed/",
        WorkRequestCompletedView.as_view(),
        name="api-work-request-completed",
    ),
]
