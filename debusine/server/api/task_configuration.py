"""
API view of task-configuration collections (`/1.0/task-configuration/{workspace}/{name}/`),
what `debusine task-config pull` and `push` call (Debusine 0.12 and 0.16 clients).

- `GET`: the collection `{name}@debusine:task-configuration` of the workspace and its active
  entries, by item name. Debusine 0.12 clients refuse the entry keys 0.16 added, so they are
  left out for any client whose `User-Agent` does not name 0.16 (`debusine/<version>`).
- `POST`: replace the entries (and the collection's data) with those given, or with
  `dry_run`, only count what would change. Needs the configure permission on the workspace.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpResponse
from django.urls import URLPattern, path
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.views import APIView

from debusine.protocol.generations import Generation, generation_from_user_agent
from debusine.protocol.task_configuration import (
    NEW_ITEM_KEYS,
    TaskConfigurationPushRequest,
    TaskConfigurationPushResult,
)
from debusine.server.api.auth import IsUser
from debusine.server.api.errors import ProblemError
from debusine.server.api.pages import json_response
from debusine.server.api.parsing import parse_body
from debusine.server.api.work_requests import WorkRequestListView, forbidden, request_user
from debusine.server.db.models import Collection, CollectionItem, CollectionItemType, Workspace

CATEGORY = "debusine:task-configuration"


class DryRunError(Exception):
    """Raised inside the transaction of a dry run to undo it."""


def task_configuration_collection(workspace: Workspace, name: str) -> Collection:
    collection = (
        Collection.objects.select_related("workspace__scope")
        .filter(workspace=workspace, category=CATEGORY, name=name)
        .first()
    )
    if collection is None:
        raise ProblemError(
            f"Collection {name}@{CATEGORY} not found",
            f"workspace {workspace.name} has no collection {name}@{CATEGORY}",
            status_code=status.HTTP_404_NOT_FOUND,
        )
    return collection


def entry_for(data: dict[str, Any], *, v016: bool) -> dict[str, Any]:
    """An entry as the client reads it: without the 0.16 keys for older clients."""
    if v016:
        return data
    return {key: value for key, value in data.items() if key not in NEW_ITEM_KEYS}


class TaskConfigurationView(APIView):
    """`GET` the entries of a task-configuration collection; `POST` replaces them."""

    permission_classes = [IsUser]

    def get(self, request: Request, workspace: str, name: str) -> HttpResponse:
        space = WorkRequestListView.workspace(request, workspace)
        collection = task_configuration_collection(space, name)
        v016 = generation_from_user_agent(request.headers.get("User-Agent")) is Generation.V0_16
        items = CollectionItem.objects.filter(
            parent_collection=collection, removed_at__isnull=True
        ).order_by("name")
        body: dict[str, Any] = {
            "collection": {"id": collection.pk, "name": collection.name, "data": collection.data},
            "items": [entry_for(item.data, v016=v016) for item in items],
        }
        return json_response(body)

    def post(self, request: Request, workspace: str, name: str) -> HttpResponse:
        space = WorkRequestListView.workspace(request, workspace)
        body = parse_body(request, TaskConfigurationPushRequest, "Invalid task configuration")
        user = request_user(request)
        if not space.can_configure(user):
            raise forbidden(f"{user.username} cannot configure workspace {space.name}")
        if body.collection.name != name:
            raise ProblemError(
                "Invalid task configuration",
                f"the body names collection {body.collection.name!r}, the URL {name!r}",
            )
        wanted: dict[str, dict[str, Any]] = {}
        for index, entry in enumerate(body.items):
            item_name = entry.item_name()
            if item_name in wanted:
                raise ProblemError(
                    "Invalid task configuration",
                    f"two entries have the name {item_name!r}",
                    validation_errors={f"items.{index}": ["duplicate entry"]},
                )
            wanted[item_name] = entry.model_dump(mode="json")
        try:
            with transaction.atomic():
                result = self.replace(space, name, body.collection.data, wanted, user)
                if body.dry_run:
                    raise DryRunError
        except DryRunError:
            pass
        return json_response(result)

    @staticmethod
    def replace(
        workspace: Workspace,
        name: str,
        data: dict[str, Any],
        wanted: dict[str, dict[str, Any]],
        user: Any,
    ) -> TaskConfigurationPushResult:
        collection = task_configuration_collection(workspace, name)
        collection = Collection.objects.select_for_update().get(pk=collection.pk)
        collection.data = data
        collection.save(update_fields=["data"])
        current = {
            item.name: item
            for item in CollectionItem.objects.filter(
                parent_collection=collection, removed_at__isnull=True
            )
        }
        now = timezone.now()
        added = updated = removed = unchanged = 0
        for item_name, item in current.items():
            if item_name in wanted and item.data == wanted[item_name]:
                unchanged += 1
                continue
            if item_name in wanted:
                updated += 1
            else:
                removed += 1
            item.removed_at, item.removed_by_user = now, user
            item.save(update_fields=["removed_at", "removed_by_user"])
        for item_name, entry in wanted.items():
            if item_name in current and current[item_name].data == entry:
                continue
            if item_name not in current:
                added += 1
            CollectionItem.objects.create(
                name=item_name,
                child_type=CollectionItemType.BARE,
                category=CATEGORY,
                parent_collection=collection,
                parent_category=CATEGORY,
                data=entry,
                created_by_user=user,
            )
        return TaskConfigurationPushResult(
            added=added, updated=updated, removed=removed, unchanged=unchanged
        )


urlpatterns: list[URLPattern] = [
    path(
        "task-configuration/<str:workspace>/<str:name>/",
        TaskConfigurationView.as_view(),
        name="api-task-configuration",
    )
]
