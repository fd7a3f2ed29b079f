"""Work requests: the rows that schedule tasks, and every change of their state."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import pydantic
from django.contrib.postgres.expressions import ArraySubquery
from django.db import models, transaction
from django.db.models import F, OuterRef, Q
from django.utils import timezone

from debusine.protocol.work_requests import (
    SERVER_ACTIONS,
    EventReactions,
    SendNotificationAction,
    TaskType,
    WorkRequestResult,
    WorkRequestStatus,
)
from debusine.server.db.models.workspaces import Workspace
from debusine.server.scheduler.triggers import request_scheduling_pass
from debusine.tasks import TaskDataError, UnknownTaskError, validate_task_data

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from debusine.server.db.models.auth import User
    from debusine.server.db.models.scopes import Scope
    from debusine.server.db.models.workers import Worker


def _choices(
    enum: type[StrEnum], label: Callable[[str], str] = str.capitalize
) -> list[tuple[str, str]]:
    """Django field choices of a wire enum (the values are the protocol's)."""
    return [(member.value, label(member.value)) for member in enum]


#: How many times a work request is retried automatically after its worker failed.
MAX_AUTOMATIC_RETRIES = 3


class UnblockStrategy(models.TextChoices):
    """What turns a blocked work request into a pending one."""

    DEPS = "deps", "Dependencies have completed"
    MANUAL = "manual", "Manually unblocked"


class RetryReason(models.TextChoices):
    """Why a work request was retried."""

    MANUAL = "manual", "Manual"
    WORKER_FAILED = "worker_failed", "Worker failed"
    DELAY = "delay", "Delayed"


class WorkRequestError(Exception):
    """A state change was asked of a work request that cannot make it."""


class InvalidWorkRequestError(Exception):
    """
    A work request cannot be created as asked: the API answers 400, the admin command exits 3.

    `title` is short, `detail` says what is wrong, `validation_errors` (field -> messages) says
    where, when it is known.
    """

    def __init__(
        self, title: str, detail: str, validation_errors: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail
        self.validation_errors = validation_errors


class WorkRequestQuerySet(models.QuerySet["WorkRequest"]):
    """Queries over work requests."""

    def pending(self) -> WorkRequestQuerySet:
        return self.filter(status=WorkRequestStatus.PENDING)

    def running(self) -> WorkRequestQuerySet:
        return self.filter(status=WorkRequestStatus.RUNNING)

    def unfinished(self) -> WorkRequestQuerySet:
        return self.filter(
            status__in=[
                WorkRequestStatus.PENDING,
                WorkRequestStatus.RUNNING,
                WorkRequestStatus.BLOCKED,
            ]
        )

    def in_scope(self, scope: Scope) -> WorkRequestQuerySet:
        return self.filter(workspace__scope=scope)

    def can_display(self, user: User | AnonymousUser) -> WorkRequestQuerySet:
        """Work requests in workspaces `user` can see (public ones for anonymous users)."""
        return self.filter(workspace__in=Workspace.objects.can_display(user))

    def with_artifact_ids(self) -> WorkRequestQuerySet:
        """
        Annotate `artifact_ids`: ids of the artifacts each work request created, ascending.

        A correlated subquery, so a page of work requests and their artifacts is one query.
        """
        from debusine.server.db.models.artifacts import Artifact

        return self.annotate(
            artifact_ids=ArraySubquery(
                Artifact.objects.filter(created_by_work_request=OuterRef("pk"))
                .order_by("id")
                .values("id")
            )
        )

    def create_for_task(
        self,
        *,
        workspace: Workspace,
        created_by: User,
        task_type: str,
        task_name: str,
        task_data: Any,
        event_reactions: Any = None,
        priority_base: int = 0,
        allow_server_actions: bool = False,
    ) -> WorkRequest:
        """
        Validate a new work request and store it, pending; the one way to create one.

        :param workspace: where it lives (permission checks are the caller's business).
        :param created_by: the user it acts for.
        :param task_type: a `TaskType` value, e.g. "Worker".
        :param task_name: a task registered for `task_type` in `debusine.tasks`.
        :param task_data: checked against the task's data model; stored normalised.
        :param event_reactions: None or an object of `EventReactions` shape; only
            `send-notification` actions are valid, and every channel must exist.
        :param priority_base: base priority (an admin may adjust it later).
        :param allow_server_actions: also accept the event reactions only server-side code
            may set (`update-collection-with-artifacts`), never from what a user sent.
        :raises InvalidWorkRequestError: nothing is stored then.
        """
        title = "Cannot create work request"
        try:
            normalised = validate_task_data(task_type, task_name, task_data)
        except UnknownTaskError as error:
            raise InvalidWorkRequestError(
                title, str(error), {"task_name": ["task name is not registered"]}
            ) from None
        except TaskDataError as error:
            raise InvalidWorkRequestError(title, str(error), error.validation_errors) from None
        reactions = _validate_event_reactions(event_reactions, allow_server_actions)
        work_request = self.create(
            workspace=workspace,
            created_by=created_by,
            task_type=task_type,
            task_name=task_name,
            task_data=normalised,
            event_reactions_json=reactions,
            priority_base=priority_base,
            status=WorkRequestStatus.PENDING,
        )
        request_scheduling_pass()
        return work_request


def _validate_event_reactions(event_reactions: Any, allow_server_actions: bool) -> dict[str, Any]:
    """Return the event reactions to store, or raise InvalidWorkRequestError."""
    title = "Cannot create work request"
    if event_reactions is None:
        return {}
    try:
        reactions = EventReactions.model_validate(event_reactions)
    except pydantic.ValidationError as error:
        problems: dict[str, list[str]] = {}
        for item in error.errors(include_url=False):
            location = ".".join(str(part) for part in ("event_reactions", *item["loc"]))
            problems.setdefault(location, []).append(item["msg"])
        listed = "; ".join(f"{loc}: {', '.join(msgs)}" for loc, msgs in problems.items())
        raise InvalidWorkRequestError(
            title, f"invalid event reactions: {listed}", problems
        ) from None
    if not allow_server_actions:
        for action in reactions.actions():
            if action.action in SERVER_ACTIONS:
                refused = f"action type {action.action!r} is not allowed here"
                raise InvalidWorkRequestError(title, refused, {"event_reactions": [refused]})
    # Notification channels do not exist yet, so no send-notification action can be valid.
    channels = sorted(
        {
            action.channel
            for action in reactions.actions()
            if isinstance(action, SendNotificationAction)
        }
    )
    if channels:
        missing = "notification channel(s) not found: " + ", ".join(repr(c) for c in channels)
        raise InvalidWorkRequestError(title, missing, {"event_reactions": [missing]})
    return reactions.model_dump(mode="json", exclude_unset=True)


class WorkRequest(models.Model):
    """A task, its parameters, and where it stands in its life cycle."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.PROTECT, related_name="work_requests"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        "db.User", on_delete=models.PROTECT, related_name="created_work_requests"
    )
    aborted_by = models.ForeignKey(
        "db.User",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="aborted_work_requests",
    )
    status = models.CharField(
        max_length=16, choices=_choices(WorkRequestStatus), default=WorkRequestStatus.PENDING
    )
    result = models.CharField(
        max_length=16,
        choices=_choices(WorkRequestResult),
        default=WorkRequestResult.NONE,
        blank=True,
    )
    worker = models.ForeignKey(
        "db.Worker",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_work_requests",
    )
    task_type = models.CharField(
        max_length=16, choices=_choices(TaskType, str), default=TaskType.WORKER
    )
    task_name = models.CharField(max_length=100)
    task_data = models.JSONField(default=dict, blank=True)
    configured_task_data = models.JSONField(null=True, blank=True)
    dynamic_task_data = models.JSONField(null=True, blank=True)
    version = models.IntegerField(default=0, help_text="Version of the dynamic data's code")
    priority_base = models.IntegerField(default=0)
    priority_adjustment = models.IntegerField(default=0)
    output_data_json = models.JSONField(
        null=True, blank=True, db_column="output_data", help_text="OutputData from the worker"
    )
    unblock_strategy = models.CharField(
        max_length=8, choices=UnblockStrategy.choices, default=UnblockStrategy.DEPS
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    dependencies = models.ManyToManyField(
        "self", symmetrical=False, related_name="reverse_dependencies", blank=True
    )
    workflow_template = models.ForeignKey(
        "db.WorkflowTemplate", null=True, blank=True, on_delete=models.SET_NULL
    )
    workflow_data_json = models.JSONField(default=dict, blank=True, db_column="workflow_data")
    event_reactions_json = models.JSONField(default=dict, blank=True, db_column="event_reactions")
    internal_collection = models.OneToOneField(
        "db.Collection",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="workflow",
    )
    expiration_delay = models.DurationField(null=True, blank=True)
    supersedes = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="superseded_by",
    )
    workflow_runtime_status = models.CharField(max_length=16, null=True, blank=True)
    workflow_last_activity_at = models.DateTimeField(null=True, blank=True)
    workflows_need_update = models.BooleanField(default=False)

    objects = WorkRequestQuerySet.as_manager()

    class Meta:
        permissions = [
            ("manage_workrequest_priorities", "Can raise the priority of work requests"),
        ]
        indexes = [
            # The scheduler's queue: pending requests by effective priority, then age.
            models.Index(
                (F("priority_base") + F("priority_adjustment")).desc(),
                "created_at",
                name="db_workrequest_queue",
                condition=Q(status="pending"),
            ),
            models.Index(fields=["worker", "status"], name="db_workrequest_worker_status"),
            models.Index(fields=["workspace", "-id"], name="db_workrequest_ws_id"),
            models.Index(
                fields=["completed_at"],
                name="db_workrequest_completed_at",
                condition=Q(completed_at__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(result="") | Q(status__in=["completed", "aborted"]),
                name="db_workrequest_result_only_when_finished",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task_type}/{self.task_name} ({self.status})"

    # --- Derived values ------------------------------------------------------------------

    @property
    def priority_effective(self) -> int:
        return self.priority_base + self.priority_adjustment

    @property
    def duration(self) -> float | None:
        """Seconds between start and completion, if both happened."""
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()

    @property
    def effective_task_data(self) -> dict[str, Any]:
        """Task data with task configuration applied, when it has been computed."""
        data: dict[str, Any] = self.configured_task_data or self.task_data
        return data

    @property
    def expire_at(self) -> datetime | None:
        """When this work request may be deleted (None: never)."""
        return self.workspace.expiry(self.created_at, self.expiration_delay)

    # --- State changes -------------------------------------------------------------------

    def _save(self, *fields: str) -> None:
        self.save(update_fields=list(fields))

    def assign_worker(self, worker: Worker) -> None:
        """Give this pending work request to `worker` (it starts on get-next)."""
        if self.status != WorkRequestStatus.PENDING:
            raise WorkRequestError(f"cannot assign a {self.status} work request")
        self.worker = worker
        self._save("worker")

    def de_assign_worker(self) -> None:
        """Take a pending work request away from its worker, back to the queue."""
        self.worker = None
        self._save("worker")
        request_scheduling_pass()

    def mark_running(self) -> None:
        """The worker has taken this work request: it starts now."""
        if self.status not in (WorkRequestStatus.PENDING, WorkRequestStatus.RUNNING):
            raise WorkRequestError(f"cannot start a {self.status} work request")
        self.status = WorkRequestStatus.RUNNING
        self.started_at = timezone.now()
        self._save("status", "started_at")

    def mark_completed(self, result: str, output_data: dict[str, Any] | None = None) -> bool:
        """
        Record the outcome. Return False, changing nothing, unless pending or running.

        Completion unblocks dependants (or aborts them when this one failed and may not).
        """
        if self.status not in (WorkRequestStatus.PENDING, WorkRequestStatus.RUNNING):
            return False
        if result not in set(WorkRequestResult) or result == WorkRequestResult.NONE:
            raise WorkRequestError(f"invalid result {result!r}")
        now = timezone.now()
        self.status = WorkRequestStatus.COMPLETED
        self.result = result
        self.completed_at = now
        if self.started_at is None:
            self.started_at = now
        fields = ["status", "result", "completed_at", "started_at"]
        if output_data is not None:
            self.output_data_json = {**(self.output_data_json or {}), **output_data}
            fields.append("output_data_json")
        self._save(*fields)
        self.update_reverse_dependencies()
        if result == WorkRequestResult.SUCCESS:
            self.process_event_reactions("on_success")
        # Its worker is free again.
        request_scheduling_pass()
        self._announce_completion()
        return True

    def process_event_reactions(self, event: str) -> None:
        """Run this work request's server-side reactions to `event` (e.g. "on_success")."""
        from debusine.server.event_reactions import run_event_reactions

        run_event_reactions(self, event)

    def _announce_completion(self) -> None:
        """Tell `on-completed` websocket listeners, once the completion has committed."""
        announce_completion(
            self.pk, self.workspace.scope_id, self.workspace_id, self.completed_at, self.result
        )

    def mark_aborted(self, by: User | None = None) -> None:
        """Abort a pending, blocked or running work request (and its children)."""
        if self.status not in (
            WorkRequestStatus.PENDING,
            WorkRequestStatus.BLOCKED,
            WorkRequestStatus.RUNNING,
        ):
            raise WorkRequestError(f"cannot abort a {self.status} work request")
        running_on = self.worker_id if self.status == WorkRequestStatus.RUNNING else None
        self.status = WorkRequestStatus.ABORTED
        self.aborted_by = by
        self.completed_at = timezone.now()
        self.worker = None
        self._save("status", "aborted_by", "completed_at", "worker")
        for child in self.children.unfinished():
            child.mark_aborted(by)
        self.update_reverse_dependencies()
        if running_on is not None:
            # Tell the worker to stop it; a worker that misses this finds out at completion.
            from debusine.server.scheduler.notifications import notify_work_request_aborted

            work_request_id = self.pk
            transaction.on_commit(lambda: notify_work_request_aborted(running_on, work_request_id))
            request_scheduling_pass()

    def retry_after_worker_failure(self, reason: str) -> WorkRequest | None:
        """
        Abort this running work request because its worker failed, and retry it.

        Return the new work request, or None when it has been retried automatically
        MAX_AUTOMATIC_RETRIES times already (it then stays aborted). `reason` is recorded in
        the old one's output data.
        """
        errors = list((self.output_data_json or {}).get("errors") or [])
        errors.append({"code": "worker-failed", "message": reason})
        self.output_data_json = {**(self.output_data_json or {}), "errors": errors}
        self._save("output_data_json")
        self.mark_aborted(None)
        try:
            return self.retry(RetryReason.WORKER_FAILED)
        except WorkRequestError:
            return None

    def succeeded_or_may_fail(self) -> bool:
        """Whether dependants may go on after this one has finished."""
        if self.status == WorkRequestStatus.COMPLETED and self.result in (
            WorkRequestResult.SUCCESS,
            WorkRequestResult.SKIPPED,
        ):
            return True
        return bool(self.workflow_data_json.get("allow_failure", False))

    def update_reverse_dependencies(self) -> None:
        """Unblock or abort blocked dependants now that this one has finished."""
        dependants = self.reverse_dependencies.filter(
            status=WorkRequestStatus.BLOCKED, unblock_strategy=UnblockStrategy.DEPS
        )
        if not self.succeeded_or_may_fail():
            for dependant in dependants:
                dependant.mark_aborted(None)
            return
        ready = dependants.exclude(
            dependencies__status__in=[
                WorkRequestStatus.PENDING,
                WorkRequestStatus.RUNNING,
                WorkRequestStatus.BLOCKED,
            ]
        )
        if WorkRequest.objects.filter(pk__in=ready.values("pk")).update(
            status=WorkRequestStatus.PENDING
        ):
            request_scheduling_pass()

    def unblock_if_ready(self) -> None:
        """Turn a blocked request whose dependencies have all finished well into pending."""
        if (
            self.status != WorkRequestStatus.BLOCKED
            or self.unblock_strategy != UnblockStrategy.DEPS
        ):
            return
        dependencies = list(self.dependencies.all())
        if any(dep.status not in ("completed", "aborted") for dep in dependencies):
            return
        if all(dep.succeeded_or_may_fail() for dep in dependencies):
            self.status = WorkRequestStatus.PENDING
            self._save("status")
            request_scheduling_pass()
        else:
            self.mark_aborted(None)

    def can_retry(self) -> bool:
        """Whether a retry makes sense: it ended badly and has not been retried yet."""
        if hasattr(self, "superseded_by"):
            return False
        if self.status == WorkRequestStatus.ABORTED:
            return True
        return self.status == WorkRequestStatus.COMPLETED and self.result in (
            WorkRequestResult.FAILURE,
            WorkRequestResult.ERROR,
        )

    def retry(self, reason: str = RetryReason.MANUAL) -> WorkRequest:
        """
        Create the work request that supersedes this one and return it.

        It copies the task, takes over this one's dependencies and dependants, and is pending
        or blocked depending on its dependencies.
        """
        if not self.can_retry():
            raise WorkRequestError(f"cannot retry a {self.status}/{self.result} work request")
        workflow_data = dict(self.workflow_data_json)
        if reason == RetryReason.WORKER_FAILED:
            count = int(workflow_data.get("retry_count", 0)) + 1
            if count > MAX_AUTOMATIC_RETRIES:
                raise WorkRequestError("too many automatic retries")
            workflow_data["retry_count"] = count
        elif reason == RetryReason.MANUAL:
            workflow_data.pop("retry_count", None)
        with transaction.atomic():
            new = WorkRequest.objects.create(
                workspace=self.workspace,
                created_by=self.created_by,
                status=WorkRequestStatus.BLOCKED,
                task_type=self.task_type,
                task_name=self.task_name,
                task_data=self.task_data,
                priority_base=self.priority_base,
                priority_adjustment=self.priority_adjustment,
                unblock_strategy=self.unblock_strategy,
                parent=self.parent,
                workflow_template=self.workflow_template,
                workflow_data_json=workflow_data,
                event_reactions_json=self.event_reactions_json,
                expiration_delay=self.expiration_delay,
                supersedes=self,
            )
            new.dependencies.set(self.dependencies.all())
            # The dependants now wait for `new` instead: one UPDATE of their links.
            WorkRequest.dependencies.through.objects.filter(to_workrequest=self).update(
                to_workrequest=new
            )
            new.unblock_if_ready()
        return new

    def set_priority_adjustment(self, adjustment: int) -> None:
        self.priority_adjustment = adjustment
        self._save("priority_adjustment")
        request_scheduling_pass()

    def is_expired(self, at: datetime | None = None) -> bool:
        expire_at = self.expire_at
        return expire_at is not None and expire_at <= (at or timezone.now())


#: Results announced to `on-completed` listeners (not aborted or skipped work).
ANNOUNCED_RESULTS = frozenset(
    {WorkRequestResult.SUCCESS, WorkRequestResult.FAILURE, WorkRequestResult.ERROR}
)


def announce_completion(
    work_request_id: int,
    scope_id: int,
    workspace_id: int,
    completed_at: datetime | None,
    result: str,
) -> None:
    """Announce a completion to `on-completed` websockets once the transaction commits."""
    if result not in ANNOUNCED_RESULTS:
        return
    from debusine.protocol.wire import iso_datetime
    from debusine.server.scheduler.notifications import notify_work_request_completed

    transaction.on_commit(
        functools.partial(
            notify_work_request_completed,
            work_request_id=work_request_id,
            scope_id=scope_id,
            workspace_id=workspace_id,
            completed_at=iso_datetime(completed_at) or "",
            result=str(result),
        )
    )
