"""
Web pages of workers and the queue: the worker list (connected, busy or idle, metadata, what
each runs; superusers disable and enable them, and pause and resume those of no pool), and the
queue status (pending and blocked work requests per task and architecture, the oldest pending
one, load against capacity).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min, Q, Sum
from django.db.models.fields.json import KeyTextTransform
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from debusine.protocol.work_requests import WorkRequestStatus
from debusine.server.db.models import Worker, WorkRequest
from debusine.server.web.access import request_user
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import WorkRequestError

#: The worker list shows at most this many workers.
WORKER_LIMIT = 1000


def worker_state(worker: Worker) -> str:
    """
    `disabled`, `paused` (takes no new work; `draining` for a pool worker), `disconnected`,
    `busy` (every slot taken) or `idle`.
    """
    if not worker.is_enabled():
        return "disabled"
    if worker.draining_at is not None:
        return "paused" if worker.worker_pool_id is None else "draining"
    if worker.connected_at is None:
        return "disconnected"
    if worker.running >= worker.concurrency:  # type: ignore[attr-defined]
        return "busy"
    return "idle"


@dataclass
class WorkerRow:
    worker: Worker
    state: str
    metadata: str
    current: list[WorkRequest]


def current_work(request: HttpRequest, worker_ids: list[int]) -> dict[int, list[WorkRequest]]:
    """
    What each of `worker_ids` runs, by worker, of the work requests the user may see (one
    query; none without workers).
    """
    current: dict[int, list[WorkRequest]] = {}
    if not worker_ids:
        return current
    for work_request in (
        WorkRequest.objects.can_display(request_user(request))
        .filter(worker_id__in=worker_ids, status=WorkRequestStatus.RUNNING)
        .select_related("workspace__scope")
        .only("id", "task_name", "worker_id", "workspace__name", "workspace__scope__name")
        .order_by("id")
    ):
        assert work_request.worker_id is not None
        current.setdefault(work_request.worker_id, []).append(work_request)
    return current


@require_safe
def worker_list(request: HttpRequest) -> HttpResponse:
    """`GET /-/workers/`: every worker, its state and what it runs (that the user may see)."""
    workers = list(
        Worker.objects.select_related("token", "worker_pool")
        .annotate(
            running=Count(
                "assigned_work_requests",
                filter=Q(assigned_work_requests__status=WorkRequestStatus.RUNNING),
            )
        )
        .order_by("name")[:WORKER_LIMIT]
    )
    current = current_work(request, [worker.pk for worker in workers if worker.running])
    rows = [
        WorkerRow(
            worker,
            worker_state(worker),
            json.dumps(worker.metadata(), indent=1, sort_keys=True),
            current.get(worker.pk, []),
        )
        for worker in workers
    ]
    return render(
        request,
        "web/workers.html",
        {"rows": rows, "may_manage_workers": request_user(request).is_superuser},
    )


@require_POST
def worker_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    """
    `POST /-/workers/<name>/{disable,enable,pause,resume}/` (superusers): as `debusine-admin
    worker`.
    """
    if not request_user(request).is_superuser:
        return render(
            request,
            "web/refused.html",
            {"message": "Only administrators can disable, enable, pause or resume workers."},
            status=403,
        )
    worker = Worker.objects.select_related("token", "activation_token").filter(name=name).first()
    if worker is None:
        raise Http404(f"No worker {name!r}")
    if action == "disable":
        transitions.worker_disabled(worker)
    elif action == "enable":
        if worker.token is None:
            return render(
                request,
                "web/refused.html",
                {"message": f"Worker {name} has not registered yet: it has no token."},
                status=400,
            )
        transitions.worker_enabled(worker)
    elif action in ("pause", "resume"):
        try:
            if action == "pause":
                transitions.worker_paused(worker)
            else:
                transitions.worker_resumed(worker)
        except WorkRequestError as error:
            return render(request, "web/refused.html", {"message": f"{error}."}, status=400)
    else:
        raise Http404("No such action")
    return HttpResponseRedirect(reverse("web-workers"))


@dataclass
class QueueRow:
    task_type: str
    task_name: str
    architecture: str
    pending: int
    blocked: int
    oldest_pending: datetime | None


@require_safe
def queue_status(request: HttpRequest) -> HttpResponse:
    """`GET /-/queue/`: what waits, per task and architecture, and the workers' capacity."""
    grouped = (
        WorkRequest.objects.filter(
            status__in=[WorkRequestStatus.PENDING, WorkRequestStatus.BLOCKED]
        )
        .annotate(architecture=KeyTextTransform("host_architecture", "task_data"))
        .values("task_type", "task_name", "architecture")
        .annotate(
            pending_count=Count("id", filter=Q(status=WorkRequestStatus.PENDING)),
            blocked_count=Count("id", filter=Q(status=WorkRequestStatus.BLOCKED)),
            oldest_pending=Min("created_at", filter=Q(status=WorkRequestStatus.PENDING)),
        )
        .order_by("task_type", "task_name", "architecture")
    )
    rows = [
        QueueRow(
            row["task_type"],
            row["task_name"],
            row["architecture"] or "",
            row["pending_count"],
            row["blocked_count"],
            row["oldest_pending"],
        )
        for row in grouped[:1000]
    ]
    capacity = Worker.objects.filter(connected_at__isnull=False, token__enabled=True).aggregate(
        slots=Sum("concurrency"), workers=Count("id")
    )
    running = WorkRequest.objects.filter(status=WorkRequestStatus.RUNNING).count()
    oldest = [row.oldest_pending for row in rows if row.oldest_pending is not None]
    return render(
        request,
        "web/queue.html",
        {
            "rows": rows,
            "pending_total": sum(row.pending for row in rows),
            "blocked_total": sum(row.blocked for row in rows),
            "oldest_pending": min(oldest) if oldest else None,
            "now": timezone.now(),
            "running_count": running,
            "slots": capacity["slots"] or 0,
            "connected_workers": capacity["workers"],
        },
    )
