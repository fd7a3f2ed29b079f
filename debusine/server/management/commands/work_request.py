"""`debusine-admin work_request`: create work requests of any task type, and list them."""

from __future__ import annotations

import argparse
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from debusine.server.db.defaults import SYSTEM_USERNAME
from debusine.server.db.models import TaskType, User, WorkRequest, WorkRequestStatus
from debusine.server.management.base import (
    NounCommand,
    add_yaml_option,
    check_choice,
    fail,
    get_user,
    get_workspace,
    non_negative_int,
    read_json_mapping,
)
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import InvalidWorkRequestError

#: How many work requests `list` shows by default.
DEFAULT_LIMIT = 50


class Command(NounCommand):
    help = "Manage work requests: create (of any task type), list."

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(
            verbs,
            "create",
            "Create a work request and print its id. Unlike the API, this can start any task "
            "type (Worker, Server, Signing, ...). Task data is validated against the task.",
        )
        create.add_argument("task_type", metavar="TASK_TYPE", help="e.g. Worker, Server, Signing")
        create.add_argument("task_name", metavar="TASK_NAME", help="e.g. noop")
        create.add_argument(
            "--created-by",
            metavar="USER",
            help=f"user the work request acts for (default: {SYSTEM_USERNAME})",
        )
        create.add_argument(
            "--workspace",
            metavar="SCOPE/NAME",
            help="workspace (a bare NAME is in the default scope; default: the default workspace)",
        )
        create.add_argument(
            "--data",
            metavar="FILE",
            help="task data as YAML from FILE ('-': stdin); default: no data",
        )
        create.add_argument(
            "--event-reactions",
            metavar="FILE",
            help="event reactions as YAML from FILE ('-': stdin)",
        )

        listing = self.add_verb(verbs, "list", "List work requests, newest first.")
        listing.add_argument(
            "--status",
            choices=[s.value for s in WorkRequestStatus],
            help="only work requests in this state",
        )
        listing.add_argument(
            "--limit",
            type=non_negative_int,
            default=DEFAULT_LIMIT,
            metavar="N",
            help=f"list at most N (default {DEFAULT_LIMIT}; 0: all)",
        )
        add_yaml_option(listing)

    def verb_create(
        self,
        *,
        task_type: str,
        task_name: str,
        created_by: str | None,
        workspace: str | None,
        data: str | None,
        event_reactions: str | None,
        **_: Any,
    ) -> None:
        check_choice(task_type, [t.value for t in TaskType], "task type")
        if data == "-" and event_reactions == "-":
            fail("--data and --event-reactions cannot both read stdin")
        user: User = get_user(created_by or SYSTEM_USERNAME)
        target = get_workspace(workspace or settings.DEBUSINE_DEFAULT_WORKSPACE)
        task_data = (
            read_json_mapping(data, self.stdin, f"--data {data}") if data is not None else {}
        )
        reactions = (
            read_json_mapping(event_reactions, self.stdin, f"--event-reactions {event_reactions}")
            if event_reactions is not None
            else None
        )
        try:
            work_request = transitions.create(
                workspace=target,
                created_by=user,
                task_type=task_type,
                task_name=task_name,
                task_data=task_data,
                event_reactions=reactions,
            )
        except InvalidWorkRequestError as error:
            fail(f"{error.title}: {error.detail}")
        self.write(str(work_request.pk))

    def verb_list(self, *, status: str | None, limit: int, yaml: bool, **_: Any) -> None:
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
