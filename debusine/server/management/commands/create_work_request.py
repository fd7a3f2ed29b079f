"""`debusine-admin create_work_request`: create a work request of any task type; print its id."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from debusine.server.db.defaults import SYSTEM_USERNAME
from debusine.server.db.models import TaskType, User, WorkRequest
from debusine.server.db.models.work_requests import InvalidWorkRequestError
from debusine.server.management.base import (
    AdminCommand,
    check_choice,
    fail,
    get_user,
    get_workspace,
    read_json_mapping,
)


class Command(AdminCommand):
    help = (
        "Create a work request and print its id. Unlike the API, this can start any task "
        "type (Worker, Server, Signing, ...). Task data is validated against the task."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task_type", metavar="TASK_TYPE", help="e.g. Worker, Server, Signing")
        parser.add_argument("task_name", metavar="TASK_NAME", help="e.g. noop")
        parser.add_argument(
            "--created-by",
            metavar="USER",
            help=f"user the work request acts for (default: {SYSTEM_USERNAME})",
        )
        parser.add_argument(
            "--workspace",
            metavar="SCOPE/NAME",
            help="workspace (a bare NAME is in the default scope; default: the default workspace)",
        )
        parser.add_argument(
            "--data",
            metavar="FILE",
            help="task data as YAML from FILE ('-': stdin); default: no data",
        )
        parser.add_argument(
            "--event-reactions",
            metavar="FILE",
            help="event reactions as YAML from FILE ('-': stdin)",
        )

    def run(
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
            work_request = WorkRequest.objects.create_for_task(
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
