"""
Server-side event reactions of work requests (`event_reactions`, reference §3.6).

`update-collection-with-artifacts` (on success) adds the artifacts the work request created,
those matching its `artifact_filters`, to a collection through the collection's manager, e.g.
the system tarball of an `mmdebstrap` work request to `debian@debian:environments`.
`send-notification` actions are not run (there are no notification channels yet).

A reaction that fails is logged and skipped: the work request's outcome stands.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic
from django.db import transaction

from debusine.protocol.work_requests import EventReactions, UpdateCollectionWithArtifactsAction
from debusine.server.collections import CollectionManager, ItemAdditionError
from debusine.server.db.models import Artifact, Collection, WorkRequest
from debusine.server.lookups import LookupContext
from debusine.tasks import LookupFailedError

logger = logging.getLogger(__name__)


class VariableError(ValueError):
    """A `$NAME` variable whose path is not in the artifact's data."""


def expand_variables(variables: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """
    `variables` with each `$NAME: PATH` entry replaced by `NAME: <the value at PATH in
    data>`; PATH is dotted, optionally starting with `$.` (`$.codename`, `codename`).
    """
    expanded: dict[str, Any] = {}
    for key, value in variables.items():
        if not key.startswith("$"):
            expanded[key] = value
            continue
        if not isinstance(value, str):
            raise VariableError(f"variable {key!r} must hold a path, not {value!r}")
        path = value.removeprefix("$").removeprefix(".")
        current: Any = data
        for part in path.split(".") if path else []:
            if not isinstance(current, dict) or part not in current:
                raise VariableError(f"variable {key!r}: no {value!r} in the artifact's data")
            current = current[part]
        expanded[key[1:]] = current
    return expanded


def run_event_reactions(work_request: WorkRequest, event: str) -> None:
    """Run the server-side reactions of `work_request` to `event`."""
    raw = work_request.event_reactions_json or {}
    if not raw.get(event):
        return
    try:
        reactions = EventReactions.model_validate(raw)
    except pydantic.ValidationError as error:
        logger.error("work request %s: invalid event reactions: %s", work_request.pk, error)
        return
    for action in getattr(reactions, event):
        if isinstance(action, UpdateCollectionWithArtifactsAction):
            update_collection_with_artifacts(work_request, action)


def update_collection_with_artifacts(
    work_request: WorkRequest, action: UpdateCollectionWithArtifactsAction
) -> list[int]:
    """Add the matching artifacts to the collection; return the new items' IDs."""
    context = LookupContext(work_request.workspace, work_request.created_by)
    try:
        found = context.lookup_single(action.collection, expect_type="collection")
    except LookupFailedError as error:
        logger.error(
            "work request %s: update-collection-with-artifacts: %s", work_request.pk, error
        )
        return []
    assert found.collection is not None
    manager = CollectionManager.for_collection(Collection.objects.get(pk=found.collection))
    artifacts = Artifact.objects.filter(
        created_by_work_request=work_request, **action.artifact_filters
    ).order_by("id")
    added: list[int] = []
    for artifact in artifacts:
        try:
            variables = expand_variables(action.variables or {}, artifact.data)
            # One artifact that cannot be added does not keep the others out.
            with transaction.atomic():
                item = manager.add_artifact(
                    artifact,
                    user=work_request.created_by,
                    workflow=work_request.parent,
                    variables=variables,
                )
        except (ItemAdditionError, VariableError) as error:
            logger.error(
                "work request %s: cannot add artifact %s to %s: %s",
                work_request.pk,
                artifact.pk,
                manager.collection,
                error,
            )
            continue
        added.append(item.pk)
    return added
