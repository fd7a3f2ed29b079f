"""
The "recently failed" page of a workspace: the latest work requests that failed or errored
and have not been retried, with a bulk retry (the same rule and transition as the API's retry,
one work request at a time).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_POST, require_safe

from debusine.protocol.work_requests import WorkRequestResult, WorkRequestStatus
from debusine.server.db.models import WorkRequest, Workspace
from debusine.server.db.models.work_requests import WorkRequestQuerySet
from debusine.server.web.access import may_manage, request_user, visible_workspace
from debusine.server.web.listing import WORK_REQUEST_ROW_FIELDS, work_request_rows
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import WorkRequestError

#: How many failures the page lists, and how many one bulk retry may name.
FAILED_LIMIT = 100


def recent_failures(workspace: Workspace) -> WorkRequestQuerySet:
    """Failed or errored work requests of `workspace` that nobody has retried yet."""
    return WorkRequest.objects.filter(
        workspace=workspace,
        status=WorkRequestStatus.COMPLETED,
        result__in=[WorkRequestResult.FAILURE, WorkRequestResult.ERROR],
        superseded_by__isnull=True,
    )


@require_safe
def failed_list(request: HttpRequest, scope: str, workspace: str) -> HttpResponse:
    """`GET /<scope>/<workspace>/failed/`: the latest failures, newest first."""
    workspace_object = visible_workspace(request, scope, workspace)
    rows = list(
        recent_failures(workspace_object)
        .select_related("worker")
        .only(*WORK_REQUEST_ROW_FIELDS, "created_by_id")
        .order_by("-completed_at", "-pk")[:FAILED_LIMIT]
    )
    user = request_user(request)
    return render(
        request,
        "web/failed.html",
        {
            "workspace": workspace_object,
            "rows": rows,
            "table": work_request_rows(rows, f"/{scope}/{workspace}/"),
            "may_retry": user.is_authenticated,
        },
    )


@require_POST
def retry_failed(request: HttpRequest, scope: str, workspace: str) -> HttpResponse:
    """
    `POST /<scope>/<workspace>/failed/retry/` with `id` fields: retry each of them that the
    user may retry (as the API decides); report how many were retried and which were not.
    """
    workspace_object = visible_workspace(request, scope, workspace)
    if not request_user(request).is_authenticated:
        return render(
            request, "web/refused.html", {"message": "Sign in to retry work requests."}, status=403
        )
    raw_ids = request.POST.getlist("id")
    if not raw_ids or len(raw_ids) > FAILED_LIMIT or not all(value.isdigit() for value in raw_ids):
        return render(
            request,
            "web/refused.html",
            {"message": f"Choose between 1 and {FAILED_LIMIT} work requests to retry."},
            status=400,
        )
    wanted = sorted({int(value) for value in raw_ids if len(value) <= 18})
    found = {
        work_request.pk: work_request
        for work_request in WorkRequest.objects.filter(workspace=workspace_object, pk__in=wanted)
    }
    retried, refused = [], []
    for work_request_id in wanted:
        work_request = found.get(work_request_id)
        if work_request is None:
            refused.append(f"{work_request_id} (not in this workspace)")
            continue
        work_request.workspace = workspace_object
        if not may_manage(request, work_request):
            refused.append(f"{work_request_id} (not yours to retry)")
        elif not transitions.can_retry(work_request):
            refused.append(f"{work_request_id} (not failed, or already retried)")
        else:
            try:
                retried.append(transitions.retry(work_request).pk)
            except WorkRequestError as error:
                refused.append(f"{work_request_id} ({error})")
    if retried:
        messages.success(request, f"Retried {len(retried)} work request(s).")
    if refused:
        messages.warning(request, "Not retried: " + ", ".join(refused) + ".")
    return HttpResponseRedirect(f"/{scope}/{workspace}/failed/")
