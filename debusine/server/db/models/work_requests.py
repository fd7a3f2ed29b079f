"""
Work requests: the rows that schedule tasks, and their queries.

Their changes of state live in `debusine.server.work_requests.transitions`; the statuses,
results and task types are the wire protocol's enumerations.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from django.contrib.postgres.expressions import ArraySubquery
from django.db import models
from django.db.models import F, OuterRef, Q
from django.utils import timezone

from debusine.protocol.work_requests import TaskType, WorkRequestResult, WorkRequestStatus
from debusine.server.db.models.artifacts import Artifact
from debusine.server.db.models.workspaces import Workspace

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from debusine.server.db.models.auth import User
    from debusine.server.db.models.scopes import Scope


def _choices(
    enum: type[StrEnum], label: Callable[[str], str] = str.capitalize
) -> list[tuple[str, str]]:
    """Django field choices of a wire enum (the values are the protocol's)."""
    return [(member.value, label(member.value)) for member in enum]


class UnblockStrategy(models.TextChoices):
    """What turns a blocked work request into a pending one."""

    DEPS = "deps", "Dependencies have completed"
    MANUAL = "manual", "Manually unblocked"


class RetryReason(models.TextChoices):
    """Why a work request was retried."""

    MANUAL = "manual", "Manual"
    WORKER_FAILED = "worker_failed", "Worker failed"
    DELAY = "delay", "Delayed"


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
        return self.annotate(
            artifact_ids=ArraySubquery(
                Artifact.objects.filter(created_by_work_request=OuterRef("pk"))
                .order_by("id")
                .values("id")
            )
        )


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
    #: The token a Debusine 0.16 worker's task authenticates with (minted when get-next hands
    #: the work request over, deleted when the work request is completed): it acts as the
    #: work request's worker.
    task_token = models.OneToOneField(
        "db.Token",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="task_of_work_request",
    )

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
                condition=Q(status=WorkRequestStatus.PENDING),
            ),
            models.Index(fields=["worker", "status"], name="db_workrequest_worker_status"),
            models.Index(fields=["workspace", "-id"], name="db_workrequest_ws_id"),
            # A workspace's recent workflows (the web UI's workspace page): few among many.
            models.Index(
                fields=["workspace", "-id"],
                name="db_workrequest_ws_workflows",
                condition=Q(task_type=TaskType.WORKFLOW, parent__isnull=True),
            ),
            # A workspace's recent failures (the web UI's "recently failed" page).
            models.Index(
                F("workspace"),
                F("completed_at").desc(),
                name="db_workrequest_ws_failed",
                condition=Q(
                    status=WorkRequestStatus.COMPLETED,
                    result__in=[WorkRequestResult.FAILURE, WorkRequestResult.ERROR],
                ),
            ),
            models.Index(
                fields=["completed_at"],
                name="db_workrequest_completed_at",
                condition=Q(completed_at__isnull=False),
            ),
            # A workflow's roll-up asks whether any of its children is unfinished.
            models.Index(
                fields=["parent"],
                name="db_workrequest_open_child",
                condition=Q(
                    status__in=[
                        WorkRequestStatus.PENDING,
                        WorkRequestStatus.RUNNING,
                        WorkRequestStatus.BLOCKED,
                    ]
                ),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(result=WorkRequestResult.NONE)
                | Q(status__in=[WorkRequestStatus.COMPLETED, WorkRequestStatus.ABORTED]),
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

    def is_expired(self, at: datetime | None = None) -> bool:
        expire_at = self.expire_at
        return expire_at is not None and expire_at <= (at or timezone.now())
