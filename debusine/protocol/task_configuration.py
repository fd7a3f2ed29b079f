"""
Wire models of `/1.0/task-configuration/{workspace}/{name}/` (`debusine task-config pull/push`,
Debusine 0.12 and 0.16): the items of a `debusine:task-configuration` collection.

Debusine 0.12's client refuses item keys it does not know (its model forbids extras), and 0.16
added six (`NEW_ITEM_KEYS`): the server strips those for clients that are not 0.16 and accepts
them from 0.16 pushes.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from debusine.protocol.wire import StrictRequest

#: Item keys Debusine 0.16 added; 0.12 clients reject them.
NEW_ITEM_KEYS = (
    "path",
    "position",
    "tags_provided",
    "tags_required",
    "provide_tags",
    "require_tags",
)


class TaskConfigurationItem(StrictRequest):
    """One task-configuration entry (Debusine's DebusineTaskConfiguration), 0.16 keys included."""

    task_type: StrictStr | None = None
    task_name: StrictStr | None = None
    subject: StrictStr | None = None
    context: StrictStr | None = None
    path: StrictStr | None = None
    position: StrictInt | None = None
    tags_provided: StrictStr | list[StrictStr] = []
    tags_required: StrictStr | list[StrictStr] = []
    template: StrictStr | None = None
    use_templates: list[StrictStr] = []
    delete_values: list[StrictStr] = []
    default_values: dict[str, Any] = {}
    override_values: dict[str, Any] = {}
    lock_values: list[StrictStr] = []
    provide_tags: list[StrictStr] = []
    require_tags: list[StrictStr] = []
    comment: StrictStr = ""

    @model_validator(mode="after")
    def template_or_task(self) -> TaskConfigurationItem:
        """A template names nothing to match; other entries name a task type and name."""
        for key in ("task_name", "subject", "template"):
            if ":" in (getattr(self, key) or ""):
                raise ValueError(f"{key} may not contain ':'")
        if self.template is not None:
            present = [
                key
                for key in ("task_type", "task_name", "subject", "context")
                if getattr(self, key)
            ]
            if present:
                raise ValueError(f"{', '.join(present)} should be empty if template is set")
        elif not (self.task_type and self.task_name):
            raise ValueError("task_type and task_name should be set for non-template entries")
        return self

    def item_name(self) -> str:
        """The collection item name Debusine gives this entry."""
        if self.template is not None:
            return f"template:{self.template}"
        if self.path is not None:
            return f"{self.path}:{self.position or 0}"
        context = urllib.parse.quote(self.context) if self.context else ""
        return f"{self.task_type}:{self.task_name}:{self.subject or ''}:{context}"


class TaskConfigurationCollectionRef(BaseModel):
    """The collection part of a push; `id` and 0.16's `links` are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: StrictStr = Field(min_length=1)
    data: dict[str, Any] = {}


class TaskConfigurationPushRequest(StrictRequest):
    """Body of `POST /1.0/task-configuration/{workspace}/{name}/`."""

    collection: TaskConfigurationCollectionRef
    items: list[TaskConfigurationItem]
    dry_run: StrictBool = False


class TaskConfigurationPushResult(BaseModel):
    """What a push changed (or would change, for a dry run)."""

    added: int
    updated: int
    removed: int
    unchanged: int
