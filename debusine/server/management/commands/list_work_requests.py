"""`debusine-admin list_work_requests`: the most recent work requests, newest first."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import WorkRequest, WorkRequestStatus
from debusine.server.management.base import AdminCommand, add_yaml_option, non_negative_int

DEFAULT_LIMIT = 50


class Command(AdminCommand):
    help = "List work requests, newest first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--status",
            choices=[s.value for s in WorkRequestStatus],
            help="only work requests in this state",
        )
        parser.add_argument(
            "--limit",
            type=non_negative_int,
            default=DEFAULT_LIMIT,
            metavar="N",
            help=f"list at most N (default {DEFAULT_LIMIT}; 0: all)",
        )
        add_yaml_option(parser)

    def run(self, *, status: str | None, limit: int, yaml: bool, **_: Any) -> None:
        work_requests = WorkRequest.objects.order_by("-created_at", "-id").values(
            "id",
            "workspace__scope__name",
            "workspace__name",
            "task_type",
            "task_name",
            "status",
            "result",
            "worker__name",
            "created_by__username",
            "created_at",
            "started_at",
            "completed_at",
        )
        if status is not None:
            work_requests = work_requests.filter(status=status)
        if limit:
            work_requests = work_requests[:limit]
        rows = [
            {
                "id": row["id"],
                "workspace": f"{row['workspace__scope__name']}/{row['workspace__name']}",
                "task_type": row["task_type"],
                "task_name": row["task_name"],
                "status": row["status"],
                "result": row["result"],
                "worker": row["worker__name"],
                "created_by": row["created_by__username"],
                "created_at": row["created_at"],
                "started_at": row["started_at"],
                "completed_at": row["completed_at"],
            }
            for row in work_requests
        ]
        if yaml:
            self.write_yaml(rows)
            return
        self.write_table(
            ["ID", "WORKSPACE", "TASK", "STATUS", "RESULT", "WORKER", "CREATED BY", "CREATED"],
            [
                [
                    row["id"],
                    row["workspace"],
                    f"{row['task_type']}/{row['task_name']}",
                    row["status"],
                    row["result"] or "-",
                    row["worker"],
                    row["created_by"],
                    row["created_at"],
                ]
                for row in rows
            ],
        )
