"""
Web pages of work requests: the list (filters, keyset pagination), one work request's page
(data, timeline, worker, artifacts and logs, a workflow's tree), its retry and abort
buttons, and the review form of a manual-unblock work request (notes, accept or reject, and
its review log); they call the same transitions and permission rules as the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST, require_safe

from debusine.protocol.work_requests import (
    UNBLOCK_NOTES_MAX,
    ManualUnblockAction,
    TaskType,
    WorkRequestStatus,
)
from debusine.server.api.work_requests import can_unblock
from debusine.server.db.models import (
    Artifact,
    FileInArtifact,
    User,
    Worker,
    WorkRequest,
    Workspace,
)
from debusine.server.db.models.work_requests import UnblockStrategy
from debusine.server.scheduler.matching import TASK_TYPES_BY_WORKER_TYPE
from debusine.server.web.access import may_manage, request_user, visible_workspace
from debusine.server.web.listing import (
    WORK_REQUEST_ROW_FIELDS,
    InvalidFilterError,
    RowValues,
    WorkRequestFilters,
    keyset_page,
    work_request_rows,
)
from debusine.server.web.pending import explain_pending
from debusine.server.work_requests import live_logs, transitions
from debusine.server.work_requests.transitions import WorkRequestError

#: A workflow page shows at most this many work requests of its tree.
TREE_LIMIT = 2000

#: A work request page lists at most this many artifacts it made.
ARTIFACT_LIMIT = 200

DEBUG_LOGS_CATEGORY = "debusine:work-request-debug-logs"


def work_request_url(work_request: WorkRequest, workspace: Workspace) -> str:
    return f"/{workspace.scope.name}/{workspace.name}/work-request/{work_request.pk}/"


@require_safe
def work_request_list(request: HttpRequest, scope: str, workspace: str) -> HttpResponse:
    """`GET /<scope>/<workspace>/work-request/`: filters status, task, worker, workflow."""
    workspace_object = visible_workspace(request, scope, workspace)
    filters = WorkRequestFilters.from_query(request.GET)
    page = None
    errors = list(filters.errors)
    if not errors:
        queryset = filters.apply(
            WorkRequest.objects.filter(workspace=workspace_object)
            .select_related("worker")
            .only(*WORK_REQUEST_ROW_FIELDS)
        )
        try:
            page = keyset_page(queryset, request.GET)
        except InvalidFilterError as error:
            errors.append(str(error))
    query = request.GET.copy()
    query.pop("before", None)
    query.pop("after", None)
    return render(
        request,
        "web/work_request_list.html",
        {
            "workspace": workspace_object,
            "filters": filters,
            "page": page,
            "rows": work_request_rows(page.rows, f"/{scope}/{workspace}/") if page else "",
            "errors": errors,
            "statuses": [status.value for status in WorkRequestStatus],
            "base_query": query.urlencode(),
        },
        status=400 if errors else 200,
    )


def visible_work_request(
    request: HttpRequest, scope: str, workspace: str, work_request_id: int
) -> WorkRequest:
    """The work request of that workspace, if the user may see the workspace (else 404)."""
    workspace_object = visible_workspace(request, scope, workspace)
    work_request = (
        WorkRequest.objects.select_related(
            "worker", "created_by", "aborted_by", "parent", "supersedes", "superseded_by"
        )
        .filter(pk=work_request_id, workspace=workspace_object)
        .first()
    )
    if work_request is None:
        raise Http404(f"No work request {work_request_id}")
    # Reuse the workspace already fetched (with the user's permissions on it).
    work_request.workspace = workspace_object
    return work_request


def descendant_ids_sql(workflow_id: int) -> tuple[str, list[int]]:
    """
    A WHERE condition, "`{column}` is the id of a descendant of the workflow", and its
    parameters. `= ANY(ARRAY(...))` rather than `IN (...)`: PostgreSQL runs the recursive
    query once (it follows the parent index) and then fetches rows by key, instead of
    walking a whole table to test each row.
    """
    table = WorkRequest._meta.db_table
    sql = f"""
        {{column}} = ANY(ARRAY(
            WITH RECURSIVE tree(id) AS (
                SELECT id FROM {table} WHERE parent_id = %s
                UNION ALL
                SELECT child.id FROM {table} AS child JOIN tree ON child.parent_id = tree.id
            )
            SELECT id FROM tree
        ))
    """  # noqa: S608 (the table name comes from model metadata; the id is a parameter)
    return sql, [workflow_id]


@dataclass
class TreeNode:
    """A work request of a workflow's tree and its depth below the workflow."""

    row: RowValues
    depth: int


def workflow_tree(workflow: WorkRequest) -> tuple[list[TreeNode], bool]:
    """
    Every descendant of `workflow` in depth-first order, in one query (a recursive CTE);
    and whether the tree was cut at TREE_LIMIT.

    Straight SQL into tuples: at hundreds of rows, compiling an ORM query and making model
    instances (deferred fields, the worker through select_related) cost more than the query.
    """
    condition, parameters = descendant_ids_sql(workflow.pk)
    table, workers = WorkRequest._meta.db_table, Worker._meta.db_table
    sql = f"""
        SELECT wr.id, wr.task_type, wr.task_name, wr.status, wr.result, wr.created_at,
               wr.started_at, wr.completed_at, worker.name, wr.parent_id
        FROM {table} AS wr LEFT JOIN {workers} AS worker ON worker.id = wr.worker_id
        WHERE {condition.replace("{column}", "wr.id")}
        ORDER BY wr.id
        LIMIT %s
    """  # noqa: S608 (table names from model metadata; values are parameters)
    with connections[WorkRequest.objects.db].cursor() as cursor:
        cursor.execute(sql, [*parameters, TREE_LIMIT + 1])
        rows = cursor.fetchall()
    truncated = len(rows) > TREE_LIMIT
    children: dict[int | None, list[RowValues]] = {}
    for *values, parent_id in rows[:TREE_LIMIT]:
        children.setdefault(parent_id, []).append(RowValues(*values))
    nodes: list[TreeNode] = []
    stack = [(child, 1) for child in reversed(children.get(workflow.pk, []))]
    while stack:
        node, depth = stack.pop()
        nodes.append(TreeNode(node, depth))
        stack.extend((child, depth + 1) for child in reversed(children.get(node.pk, [])))
    return nodes, truncated


def made_artifacts(work_request: WorkRequest) -> tuple[list[Artifact], list[FileInArtifact]]:
    """The artifacts the work request made, and the files of its debug-log artifacts."""
    artifacts = list(
        Artifact.objects.filter(created_by_work_request=work_request)
        .only("id", "category", "created_at", "workspace_id")
        .order_by("id")[:ARTIFACT_LIMIT]
    )
    log_artifacts = [
        artifact.pk for artifact in artifacts if artifact.category == DEBUG_LOGS_CATEGORY
    ]
    log_files: list[FileInArtifact] = []
    if log_artifacts:
        log_files = list(
            FileInArtifact.objects.filter(artifact_id__in=log_artifacts)
            .select_related("file")
            .order_by("artifact_id", "path")[:ARTIFACT_LIMIT]
        )
    return artifacts, log_files


def is_waiting_for_a_worker(work_request: WorkRequest) -> bool:
    """Pending, and of a task type that workers run (the others the server runs itself)."""
    return (
        work_request.status == WorkRequestStatus.PENDING
        and work_request.task_type in TASK_TYPES_BY_WORKER_TYPE.values()
    )


@dataclass
class ReviewEntry:
    """One entry of a manual-unblock work request's review log, as its page shows it."""

    username: str
    timestamp: str
    notes: str | None
    action: str | None


def review_log(work_request: WorkRequest) -> list[ReviewEntry]:
    """Its review log with the reviewers' names (one query, none when the log is empty)."""
    log = transitions.manual_unblock_log(work_request)
    user_ids = {entry["user_id"] for entry in log if isinstance(entry.get("user_id"), int)}
    names: dict[int, str] = (
        dict(User.objects.filter(pk__in=user_ids).values_list("pk", "username"))
        if user_ids
        else {}
    )
    return [
        ReviewEntry(
            username=names.get(entry.get("user_id", 0), f"user {entry.get('user_id')}"),
            timestamp=str(entry.get("timestamp", "")).replace("T", " ")[:19],
            notes=entry.get("notes"),
            action=entry.get("action"),
        )
        for entry in log
    ]


def may_review(request: HttpRequest, work_request: WorkRequest) -> bool:
    """Whether the session's user may unblock `work_request` (the API's rule)."""
    user = request_user(request)
    return isinstance(user, User) and can_unblock(user, work_request)


@require_safe
def work_request_detail(
    request: HttpRequest, scope: str, workspace: str, work_request_id: int
) -> HttpResponse:
    """`GET /<scope>/<workspace>/work-request/<id>/`: everything about one work request."""
    work_request = visible_work_request(request, scope, workspace, work_request_id)
    artifacts, log_files = made_artifacts(work_request)
    tree: list[TreeNode] = []
    truncated = False
    if work_request.task_type == TaskType.WORKFLOW:
        tree, truncated = workflow_tree(work_request)
    dependencies = list(
        work_request.dependencies.only("id", "task_name", "status", "result").order_by("id")[:100]
    )
    manage = may_manage(request, work_request)
    context: dict[str, Any] = {
        "workspace": work_request.workspace,
        "work_request": work_request,
        "artifacts": artifacts,
        "log_files": log_files,
        "tree": work_request_rows(
            [node.row for node in tree],
            f"/{scope}/{workspace}/",
            [node.depth for node in tree],
        )
        if tree
        else None,
        "tree_truncated": truncated,
        "dependencies": dependencies,
        "can_retry": manage and transitions.can_retry(work_request),
        "can_abort": manage and work_request.status in transitions.UNFINISHED,
        "waiting": explain_pending(work_request)
        if is_waiting_for_a_worker(work_request)
        else None,
        "signed_in": request_user(request).is_authenticated,
        "manual_unblock": work_request.unblock_strategy == UnblockStrategy.MANUAL,
        "review_log": review_log(work_request)
        if work_request.unblock_strategy == UnblockStrategy.MANUAL
        else [],
        "can_review": transitions.awaits_manual_unblock(work_request)
        and may_review(request, work_request),
        "notes_max": UNBLOCK_NOTES_MAX,
    }
    return render(request, "web/work_request_detail.html", context)


def managed_work_request(
    request: HttpRequest, scope: str, workspace: str, work_request_id: int
) -> WorkRequest:
    """The work request, if the user may see it (else 404) and manage it (else 403)."""
    work_request = visible_work_request(request, scope, workspace, work_request_id)
    if not may_manage(request, work_request):
        raise ActionRefusedError(
            f"You cannot retry or abort work request {work_request.pk}."
            if request_user(request).is_authenticated
            else "Sign in to retry or abort work requests."
        )
    return work_request


class ActionRefusedError(Exception):
    """A refused action, answered with a 403 page that says why."""


def refusal(request: HttpRequest, message: str, status: int) -> HttpResponse:
    return render(request, "web/refused.html", {"message": message}, status=status)


@require_POST
def retry(request: HttpRequest, scope: str, workspace: str, work_request_id: int) -> HttpResponse:
    """`POST .../work-request/<id>/retry/`: retry it as the API does; go to the new one."""
    try:
        work_request = managed_work_request(request, scope, workspace, work_request_id)
    except ActionRefusedError as error:
        return refusal(request, str(error), 403)
    if not transitions.can_retry(work_request):
        return refusal(
            request,
            f"Work request {work_request.pk} is {work_request.status}"
            + (f" ({work_request.result})" if work_request.result else "")
            + " or has been retried already: only failed or aborted work requests can be "
            "retried, once.",
            400,
        )
    try:
        new = transitions.retry(work_request)
    except WorkRequestError as error:
        return refusal(request, f"Cannot retry work request {work_request.pk}: {error}", 400)
    messages.success(request, f"Work request {work_request.pk} retried as {new.pk}.")
    return HttpResponseRedirect(work_request_url(new, work_request.workspace))


@require_POST
def abort(request: HttpRequest, scope: str, workspace: str, work_request_id: int) -> HttpResponse:
    """`POST .../work-request/<id>/abort/`: abort it (and its workflow's unfinished tree)."""
    try:
        work_request = managed_work_request(request, scope, workspace, work_request_id)
    except ActionRefusedError as error:
        return refusal(request, str(error), 403)
    user = request_user(request)
    try:
        transitions.abort(work_request, by=user if user.is_authenticated else None)
    except WorkRequestError:
        return refusal(
            request,
            f"Work request {work_request.pk} is {work_request.status}: only pending, blocked "
            "or running work requests can be aborted.",
            400,
        )
    messages.success(request, f"Work request {work_request.pk} aborted.")
    return HttpResponseRedirect(work_request_url(work_request, work_request.workspace))


@require_POST
def unblock(
    request: HttpRequest, scope: str, workspace: str, work_request_id: int
) -> HttpResponse:
    """
    `POST .../work-request/<id>/unblock/` (`notes`, `action`: empty, `accept` or `reject`):
    review a blocked manual-unblock work request, as the API's unblock does.
    """
    work_request = visible_work_request(request, scope, workspace, work_request_id)
    user = request_user(request)
    if not isinstance(user, User) or not can_unblock(user, work_request):
        return refusal(
            request,
            f"You cannot review work request {work_request.pk}."
            if user.is_authenticated
            else "Sign in to review work requests.",
            403,
        )
    notes = request.POST.get("notes", "").strip() or None
    raw_action = request.POST.get("action", "")
    if raw_action not in ("", *(action.value for action in ManualUnblockAction)):
        return refusal(request, f"Unknown review action {raw_action!r}.", 400)
    action = ManualUnblockAction(raw_action) if raw_action else None
    if notes is None and action is None:
        return refusal(request, "Write notes, accept or reject: there was nothing to record.", 400)
    if notes is not None and len(notes) > UNBLOCK_NOTES_MAX:
        return refusal(request, f"Notes are limited to {UNBLOCK_NOTES_MAX} characters.", 400)
    try:
        transitions.manual_unblock(work_request, user, notes=notes, action=action)
    except WorkRequestError as error:
        return refusal(request, f"Cannot unblock work request: {error}.", 400)
    done = {
        None: "Notes recorded",
        ManualUnblockAction.ACCEPT: "Accepted: it is pending now",
        ManualUnblockAction.REJECT: "Rejected: it is aborted",
    }[action]
    messages.success(request, f"Work request {work_request.pk}: {done}.")
    return HttpResponseRedirect(work_request_url(work_request, work_request.workspace))


@require_safe
def work_request_status(
    request: HttpRequest, scope: str, workspace: str, work_request_id: int
) -> JsonResponse:
    """
    `GET …/work-request/<id>/status/`: `{"status", "result", "completed_at"}`, what the page
    polls while the work request is unfinished, to turn its banner into "finished" (and
    notify) when it ends.
    """
    work_request = visible_work_request(request, scope, workspace, work_request_id)
    return JsonResponse(
        {
            "status": work_request.status,
            "result": work_request.result,
            "completed_at": (
                work_request.completed_at.isoformat() if work_request.completed_at else None
            ),
        },
        headers={"Cache-Control": "no-store"},
    )


@require_safe
def live_log(
    request: HttpRequest, scope: str, workspace: str, work_request_id: int
) -> JsonResponse:
    """
    `GET …/work-request/<id>/live-log/?from=N`: the pieces of its live log from piece N on
    (`{"pieces": [{"stream", "data"}], "next", "ended", "status"}`), what its page polls while
    it runs.
    """
    work_request = visible_work_request(request, scope, workspace, work_request_id)
    offset = request.GET.get("from", "0")
    if not offset.isdigit() or len(offset) > 9:
        return JsonResponse({"error": f"from={offset!r} is not a piece number"}, status=400)
    page = live_logs.read_page(work_request.pk, int(offset))
    return JsonResponse(
        {
            "pieces": page.pieces,
            "next": page.next_offset,
            "ended": page.ended,
            "status": work_request.status,
        },
        headers={"Cache-Control": "no-store"},
    )
