"""
`debusine:workflow-internal` collections: what the work requests of one workflow tree hand
each other (reference §2.6, §3.5).

Each root workflow has one, shared by its sub-workflows. It holds artifacts of any category
and bare `debusine:promise` items. A promise says "work request N will provide an artifact
named NAME": its data holds `promise_work_request_id`, `promise_workflow_id` and
`promise_category`; when that work request succeeds, its artifact replaces the promise under
the same name (an `update-collection-with-artifacts` reaction with the variable `name`).
"""

from __future__ import annotations

from typing import Any

from debusine.server.collections.base import CollectionManager, ItemAdditionError
from debusine.server.db.models import Artifact

WORKFLOW_INTERNAL = "debusine:workflow-internal"
PROMISE = "debusine:promise"


class WorkflowInternalManager(CollectionManager):
    """Manages `debusine:workflow-internal` collections."""

    CATEGORY = WORKFLOW_INTERNAL

    def accepts_artifact(self, category: str) -> bool:
        return True

    def item_for_artifact(
        self, artifact: Artifact, variables: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The item is named by the variable `name`; the other variables are its data."""
        name = variables.get("name")
        if not isinstance(name, str) or not name:
            raise ItemAdditionError(
                f"{WORKFLOW_INTERNAL} items need a name: the variable 'name' is missing"
            )
        return name, {key: value for key, value in variables.items() if key != "name"}
