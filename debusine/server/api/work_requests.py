"""
API views of work requests: list and create (`/api/1.0/work-request/`), read and re-prioritise
one (`.../work-request/<id>/`), retry and abort it (`.../<id>/retry/`, `.../<id>/abort/`),
and review a manual-unblock one (`.../<id>/unblock/`).

Also home of `visible_work_requests()`, the one rule of who sees which. Work requests are
serialised by `debusine.server.work_requests.serialization` and changed by its `transitions`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import URLPattern, path
from rest_framework import status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from debusine.protocol.work_requests import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    WorkRequestCreateRequest,
    WorkRequestPatchRequest,
    WorkRequestStatus,
    WorkRequestUnblockRequest,
)
from debusine.server.api.auth import IsUser, request_worker
from debusine.server.api.errors import ProblemError
from debusine.server.api.middleware import request_scope, request_scope_name
from debusine.server.api.parsing import parse_body
from debusine.server.db.models import TaskType, User, WorkRequest, Workspace
from debusine.server.db.models.work_requests import WorkRequestQuerySet
from debusine.server.work_requests import live_logs, serialization, transitions
from debusine.server.work_requests.transitions import (
    InvalidWorkRequestError,
    WorkRequestError,
    WorkRequestPermissionError,
)
from debusine.tasks import BaseTask

#: Who may set a positive priority adjustment (besides superusers).
MANAGE_PRIORITIES_PERMISSION = "db.manage_workrequest_priorities"


# --- Shared helpers ---------------------------------------------------------------------------


def visible_work_requests(request: Request) -> WorkRequestQuerySet:
    """
    Work requests of the request's scope that the caller may read, ready to serialise.

    Workers see every work request of the scope (they never send a scope header, so that is
    the default scope); users see those in workspaces they can display, anonymous callers
    those in public workspaces.
    """
    queryset = (
        WorkRequest.objects.in_scope(request_scope(request))
        .select_related("workspace__scope")
        .with_artifact_ids()
    )
    if request_worker(request) is not None:
        return queryset
    return queryset.can_display(request.user)


def get_visible_work_request(request: Request, work_request_id: int) -> WorkRequest:
    """The work request, or a 404 problem (the same whether it is missing or hidden)."""
    work_request = visible_work_requests(request).filter(pk=work_request_id).first()
    if work_request is None:
        raise ProblemError(
            f"Work request {work_request_id} not found", status_code=status.HTTP_404_NOT_FOUND
        )
    return work_request


def request_user(request: Request) -> User:
    """The user behind a request that passed IsUser."""
    user = request.user
    assert isinstance(user, User)
    return user


def can_manage(user: User, work_request: WorkRequest) -> bool:
    """Whether `user` may retry or abort `work_request`."""
    return (
        user.is_superuser
        or work_request.created_by_id == user.pk
        or work_request.workspace.can_create_work_requests(user)
    )


def can_unblock(user: User, work_request: WorkRequest) -> bool:
    """
    Whether `user` may review (unblock) `work_request`: a superuser, or a contributor of its
    workspace. Unlike retry and abort, being its creator is not enough: a review is someone
    else's say on the work.
    """
    return user.is_superuser or work_request.workspace.can_create_work_requests(user)


#: Signing tasks that name no key, so no signer role can allow them: superusers only.
KEYLESS_SIGNING_TASKS = frozenset({"generatekey"})


def forbidden(detail: str) -> ProblemError:
    return ProblemError("Permission denied", detail, status_code=status.HTTP_403_FORBIDDEN)


def ok(work_request: WorkRequest) -> HttpResponse:
    return serialization.work_request_response(work_request)


# --- Pagination -------------------------------------------------------------------------------

# A cursor names an id and a direction: "n<id>" is the page of ids below it (older), "p<id>"
# the page of ids above it (newer). Keyset pagination keeps the cost of a page constant and
# pages stable while work requests are added. Cursors are opaque to clients.
NEXT, PREVIOUS = "n", "p"


def encode_cursor(direction: str, work_request_id: int) -> str:
    return base64.urlsafe_b64encode(f"{direction}{work_request_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """Return (direction, id) of a cursor, or raise a 404 problem, as DRF does."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, work_request_id = text[0], int(text[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError, IndexError):
        raise ProblemError(
            "Invalid cursor", f"{cursor!r} is not a cursor", status_code=404
        ) from None
    if direction not in (NEXT, PREVIOUS) or work_request_id < 0:
        raise ProblemError("Invalid cursor", f"{cursor!r} is not a cursor", status_code=404)
    return direction, work_request_id


def page_url(request: Request, cursor: str) -> str:
    """Absolute URL of this listing at `cursor`, other query parameters kept."""
    query = request.query_params.copy()
    query["cursor"] = cursor
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def paginated_response(request: Request, queryset: WorkRequestQuerySet) -> HttpResponse:
    """One page of `queryset`, newest first: `{"next", "previous", "results"}` (no count)."""
    size = settings.DEBUSINE_WORK_REQUEST_PAGE_SIZE
    cursor = request.query_params.get("cursor")
    direction, boundary = decode_cursor(cursor) if cursor else (NEXT, None)
    if direction == NEXT:
        if boundary is not None:
            queryset = queryset.filter(pk__lt=boundary)
        # One row beyond the page tells whether there is a next page.
        rows = serialization.rows(queryset.order_by("-pk")[: size + 1])
        has_more, rows = len(rows) > size, rows[:size]
        has_next, has_previous = has_more, boundary is not None
    else:
        assert boundary is not None
        rows = serialization.rows(queryset.filter(pk__gt=boundary).order_by("pk")[: size + 1])
        has_more, rows = len(rows) > size, rows[:size]
        rows.reverse()
        has_next, has_previous = True, has_more

    next_url = previous_url = None
    if has_next:
        # An empty page still links back to where it started.
        last = rows[-1].id if rows else (boundary if boundary is not None else 0) + 1
        next_url = page_url(request, encode_cursor(NEXT, last))
    if has_previous:
        first = rows[0].id if rows else (boundary if boundary is not None else 1) - 1
        previous_url = page_url(request, encode_cursor(PREVIOUS, first))
    return serialization.json_response(serialization.page(rows, next_url, previous_url))


# --- Views ------------------------------------------------------------------------------------


class ReadAnyWriteAsUser(BasePermission):
    """Reads are open (visibility is filtered per row); writes need a user token."""

    message = IsUser.message

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.method in ("GET", "HEAD", "OPTIONS") or IsUser().has_permission(
            request, view
        )


class WorkRequestListView(APIView):
    """`GET`: the visible work requests, paginated. `POST`: create one."""

    permission_classes = [ReadAnyWriteAsUser]

    def get(self, request: Request) -> HttpResponse:
        """
        Optional filters: `task_type=` (e.g. `Workflow`), `root_only=true` (not a step of a
        workflow), `parent=ID` (the steps of one workflow), `status=` (e.g. `pending`),
        `ids=1,2,3` (those work requests).
        """
        queryset = visible_work_requests(request)
        params = request.query_params
        if task_type := params.get("task_type"):
            queryset = queryset.filter(task_type=task_type)
        if params.get("root_only", "").lower() in ("true", "1", "yes"):
            queryset = queryset.filter(parent__isnull=True)
        if work_request_status := params.get("status"):
            if work_request_status not in {member.value for member in WorkRequestStatus}:
                raise ProblemError("Invalid filter", f"status={work_request_status!r} is unknown")
            queryset = queryset.filter(status=work_request_status)
        if ids := params.get("ids"):
            if not all(part.isdigit() for part in ids.split(",")):
                raise ProblemError("Invalid filter", f"ids={ids!r} is not a list of ids")
            queryset = queryset.filter(pk__in=[int(part) for part in ids.split(",")])
        if parent := params.get("parent"):
            if not parent.isdigit():
                raise ProblemError("Invalid filter", f"parent={parent!r} is not an id")
            queryset = queryset.filter(parent_id=int(parent))
        return paginated_response(request, queryset)

    def post(self, request: Request) -> HttpResponse:
        body = parse_body(request, WorkRequestCreateRequest)
        user = request_user(request)
        workspace = self.workspace(request, body.workspace or settings.DEBUSINE_DEFAULT_WORKSPACE)
        if not workspace.user_can_contribute:  # type: ignore[attr-defined]
            raise forbidden(f"{user.username} cannot create work requests in {workspace.name}")
        try:
            work_request = transitions.create(
                workspace=workspace,
                created_by=user,
                task_type=self.task_type(user, body.task_name),
                task_name=body.task_name,
                task_data=body.task_data,
                event_reactions=body.event_reactions,
            )
        except InvalidWorkRequestError as error:
            raise ProblemError(
                error.title,
                error.detail,
                validation_errors=error.validation_errors,
                status_code=status.HTTP_403_FORBIDDEN
                if isinstance(error, WorkRequestPermissionError)
                else status.HTTP_400_BAD_REQUEST,
            ) from None
        work_request.artifact_ids = []  # type: ignore[attr-defined]
        return ok(work_request)

    @staticmethod
    def workspace(request: Request, name: str) -> Workspace:
        """
        The named workspace of the request's scope, with the caller's permissions on it
        (`Workspace.objects.with_permissions`), in one query; 404 if missing or hidden.
        """
        scope_name = request_scope_name(request)
        workspace = (
            Workspace.objects.select_related("scope")
            .filter(scope__name=scope_name, name=name)
            .with_permissions(request.user)
            .first()
        )
        if workspace is None or not workspace.user_can_display:  # type: ignore[attr-defined]
            raise ProblemError(
                f"Workspace {name} not found",
                f"No workspace {name!r} in scope {scope_name!r}",
                status_code=status.HTTP_404_NOT_FOUND,
            )
        return workspace

    @staticmethod
    def task_type(user: User, task_name: str) -> str:
        """
        Users create Worker tasks, and Signing tasks (`sign`, `debsign`, ...) with the keys
        they hold the signer role on; superusers may also create Server tasks and generate
        signing keys (`generatekey`).
        """
        if BaseTask.is_registered(TaskType.WORKER, task_name):
            return TaskType.WORKER
        if user.is_superuser and BaseTask.is_registered(TaskType.SERVER, task_name):
            return TaskType.SERVER
        if BaseTask.is_registered(TaskType.SIGNING, task_name):
            if task_name in KEYLESS_SIGNING_TASKS and not user.is_superuser:
                raise forbidden(f"only a superuser may create {task_name} work requests")
            return TaskType.SIGNING
        return TaskType.WORKER


class WorkRequestDetailView(APIView):
    """`GET`: one work request. `PATCH`: change its priority adjustment."""

    permission_classes = [ReadAnyWriteAsUser]

    def get(self, request: Request, work_request_id: int) -> HttpResponse:
        return ok(get_visible_work_request(request, work_request_id))

    def patch(self, request: Request, work_request_id: int) -> HttpResponse:
        work_request = get_visible_work_request(request, work_request_id)
        body = parse_body(request, WorkRequestPatchRequest)
        user = request_user(request)
        adjustment = body.priority_adjustment
        may_raise = user.has_perm(MANAGE_PRIORITIES_PERMISSION)
        own_and_lowering = work_request.created_by_id == user.pk and adjustment <= 0
        if not (may_raise or own_and_lowering):
            raise forbidden(
                f"{user.username} cannot set the priority adjustment of work request "
                f"{work_request.pk} to {adjustment}"
            )
        if not PRIORITY_MIN <= work_request.priority_base + adjustment <= PRIORITY_MAX:
            # The scheduler's queue index sums both columns: the sum must fit too.
            raise ProblemError(
                "Invalid priority adjustment",
                f"priority_base {work_request.priority_base} + priority_adjustment "
                f"{adjustment} is outside [{PRIORITY_MIN}, {PRIORITY_MAX}]",
            )
        transitions.set_priority_adjustment(work_request, adjustment)
        return ok(work_request)


class WorkRequestRetryView(APIView):
    """`POST`: retry a failed or aborted work request; answer with the new one."""

    permission_classes = [IsUser]

    def post(self, request: Request, work_request_id: int) -> HttpResponse:
        work_request = get_visible_work_request(request, work_request_id)
        user = request_user(request)
        if not can_manage(user, work_request):
            raise forbidden(f"{user.username} cannot retry work request {work_request.pk}")
        if not transitions.can_retry(work_request):
            raise ProblemError(
                "Cannot retry work request",
                f"Work request {work_request.pk} is {work_request.status}"
                + (f" ({work_request.result})" if work_request.result else "")
                + " or has been retried already: only failed or aborted work requests can be "
                "retried, once",
            )
        try:
            new = transitions.retry(work_request)
        except WorkRequestError as error:
            raise ProblemError("Cannot retry work request", str(error)) from None
        new.artifact_ids = []  # type: ignore[attr-defined]
        return ok(new)


class WorkRequestAbortView(APIView):
    """`POST`: abort a pending, blocked or running work request (its worker is not told)."""

    permission_classes = [IsUser]

    def post(self, request: Request, work_request_id: int) -> HttpResponse:
        work_request = get_visible_work_request(request, work_request_id)
        user = request_user(request)
        if not can_manage(user, work_request):
            raise forbidden(f"{user.username} cannot abort work request {work_request.pk}")
        try:
            transitions.abort(work_request, by=user)
        except WorkRequestError:
            raise ProblemError(
                "Cannot abort work request",
                f"Work request {work_request.pk} is {work_request.status}: only pending, "
                "blocked or running work requests can be aborted",
            ) from None
        return ok(work_request)


class WorkRequestUnblockView(APIView):
    """
    `POST {"notes"?, "action"?: "accept"|"reject"}`: review a blocked manual-unblock work
    request; the entry goes to its review log (`workflow_data.manual_unblock.log`).
    """

    permission_classes = [IsUser]

    def post(self, request: Request, work_request_id: int) -> HttpResponse:
        work_request = get_visible_work_request(request, work_request_id)
        user = request_user(request)
        if not can_unblock(user, work_request):
            raise forbidden(f"{user.username} cannot unblock work request {work_request.pk}")
        body = parse_body(request, WorkRequestUnblockRequest)
        try:
            transitions.manual_unblock(work_request, user, notes=body.notes, action=body.action)
        except WorkRequestError as error:
            raise ProblemError("Cannot unblock work request", str(error)) from None
        return ok(work_request)


class WorkRequestLiveLogView(APIView):
    """
    `GET ?after=N`: the live log of a work request, as its (Debusine 0.16) worker streams it:
    `{"frames": [...], "next": N', "status": ...}`, up to 1000 frames from position N (0 by
    default); ask again with `after=next` for more. Frames are `log_data` (`stream`, `data`,
    `timestamp`) and, at the end, `log_data_end` (`exit_code`). Kept in Redis for a day.
    """

    permission_classes = [ReadAnyWriteAsUser]

    def get(self, request: Request, work_request_id: int) -> HttpResponse:
        work_request = get_visible_work_request(request, work_request_id)
        after = request.query_params.get("after", "0")
        if not after.isdigit() or len(after) > 9:
            raise ProblemError("Invalid position", f"after={after!r} is not a position")
        frames, next_position = live_logs.read(work_request.pk, int(after))
        return JsonResponse(
            {"frames": frames, "next": next_position, "status": work_request.status}
        )


urlpatterns: list[URLPattern] = [
    path("work-request/", WorkRequestListView.as_view(), name="api-work-requests"),
    path(
        "work-request/<int:work_request_id>/live-log/",
        WorkRequestLiveLogView.as_view(),
        name="api-work-request-live-log",
    ),
    path(
        "work-request/<int:work_request_id>/",
        WorkRequestDetailView.as_view(),
        name="api-work-request",
    ),
    path(
        "work-request/<int:work_request_id>/retry/",
        WorkRequestRetryView.as_view(),
        name="api-work-request-retry",
    ),
    path(
        "work-request/<int:work_request_id>/abort/",
        WorkRequestAbortView.as_view(),
        name="api-work-request-abort",
    ),
    path(
        "work-request/<int:work_request_id>/unblock/",
        WorkRequestUnblockView.as_view(),
        name="api-work-request-unblock",
    ),
]
