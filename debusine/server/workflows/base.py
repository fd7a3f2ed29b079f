"""
Workflow orchestrators: the `Workflow` base class, its registry, and the helpers every
orchestrator builds its tree of work requests with (reference §3.5).

An orchestrator is a class registered by name (`class Noop(Workflow[NoopWorkflowData],
name="noop")`). The engine (`debusine.server.workflows.orchestration`) builds it for a work
request of task type `Workflow` and calls:

- `validate_input()` when the workflow is created (bad input is refused with its reason);
- `populate()` when it starts, and again when it is retried: it must be idempotent, which the
  `ensure_*` helpers make easy (a child is identified by its `step`, and only created when its
  workflow has none with that step);
- `callback(work_request)` when one of its `workflow` callbacks (an Internal work request it
  created with `ensure_callback`) becomes runnable.

Children carry `workflow_data`: `display_name`, `step`, `group` and `allow_failure`.
`provides_artifact()` and `requires_artifact()` wire children together through the root
workflow's internal collection: a promise names what a child will produce, and a child that
needs it depends on the promising child. Item names are namespaced by the workflow's
`prefix` (`prefix` + name), so that sub-workflows of one tree do not collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar, get_args

import pydantic
from pydantic import BaseModel, ConfigDict

from debusine.protocol.work_requests import TaskType, WorkRequestStatus
from debusine.server.db.models import Collection, CollectionItem, WorkRequest
from debusine.server.db.models.collections import CollectionItemType
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import (
    PROMISE_CATEGORY,
    InvalidWorkRequestError,
)


class BaseWorkflowData(BaseModel):
    """Base of every workflow's task data: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


WorkflowData = TypeVar("WorkflowData", bound=BaseWorkflowData)

#: Title of the problem a workflow that cannot be created answers with.
CANNOT_CREATE = "Cannot create workflow"


class UnknownWorkflowError(LookupError):
    """No workflow is registered under that name."""


class WorkflowInputError(ValueError):
    """The workflow's input cannot work (a lookup that finds nothing, no architecture...)."""


class InternalTaskData(BaseModel):
    """Task data of Internal work requests (`synchronization_point`, `workflow`)."""

    model_config = ConfigDict(extra="forbid")


class DelayData(BaseModel):
    """Task data of the Wait task `delay`: it completes once `delay_until` has passed."""

    model_config = ConfigDict(extra="forbid")

    delay_until: datetime


class Workflow(Generic[WorkflowData]):
    """An orchestrator: what a workflow of this name creates, and how it reacts."""

    #: Name in `task_name` (and in workflow templates).
    TASK_NAME: ClassVar[str]
    #: Model its task data must match.
    TASK_DATA_MODEL: ClassVar[type[BaseWorkflowData]]

    _registry: ClassVar[dict[str, type[Workflow[Any]]]] = {}

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):
            for argument in get_args(base):
                if isinstance(argument, type) and issubclass(argument, BaseWorkflowData):
                    cls.TASK_DATA_MODEL = argument
        if name is None:
            return
        existing = Workflow._registry.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise TypeError(f"workflow {name!r} is already defined by {existing.__qualname__}")
        cls.TASK_NAME = name
        Workflow._registry[name] = cls

    def __init__(self, work_request: WorkRequest) -> None:
        self.work_request = work_request
        self.data: WorkflowData = self.TASK_DATA_MODEL.model_validate(  # type: ignore[assignment]
            work_request.task_data
        )
        self._children: dict[str, WorkRequest] | None = None

    # --- Registry ------------------------------------------------------------------------

    @staticmethod
    def class_from_name(task_name: str) -> type[Workflow[Any]]:
        try:
            return Workflow._registry[task_name]
        except KeyError:
            raise UnknownWorkflowError(task_name) from None

    @staticmethod
    def names() -> list[str]:
        return sorted(Workflow._registry)

    @classmethod
    def validate_data(cls, task_data: Any) -> dict[str, Any]:
        """
        `task_data` checked against the model, normalised (only the keys given);
        InvalidWorkRequestError listing the problems otherwise.
        """
        try:
            model = cls.TASK_DATA_MODEL.model_validate(task_data)
        except pydantic.ValidationError as error:
            problems: dict[str, list[str]] = {}
            for item in error.errors(include_url=False):
                location = ".".join(str(part) for part in item["loc"]) or "task_data"
                problems.setdefault(location, []).append(item["msg"])
            listed = "; ".join(f"{loc}: {', '.join(msgs)}" for loc, msgs in problems.items())
            raise InvalidWorkRequestError(
                CANNOT_CREATE, f"invalid {cls.TASK_NAME} task data: {listed}", problems
            ) from None
        return model.model_dump(mode="json", exclude_unset=True)

    # --- What orchestrators define -----------------------------------------------------

    def validate_input(self) -> None:
        """Check what the data model cannot (lookups...): raise WorkflowInputError."""

    def populate(self) -> None:
        """Create the children (idempotently: see the `ensure_*` helpers)."""
        raise NotImplementedError

    def callback(self, work_request: WorkRequest) -> None:
        """React to one of this workflow's `workflow` callbacks becoming runnable."""

    # --- Helpers -------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """Namespace of this workflow's names in the internal collection."""
        return str(getattr(self.data, "prefix", "") or "")

    def children_by_step(self) -> dict[str, WorkRequest]:
        """The workflow's current children (retried ones replaced) by step, read once."""
        if self._children is None:
            self._children = {}
            for child in WorkRequest.objects.filter(
                parent=self.work_request, superseded_by__isnull=True
            ).order_by("id"):
                step = child.workflow_data_json.get("step")
                if isinstance(step, str):
                    self._children[step] = child
        return self._children

    @staticmethod
    def _workflow_data(
        step: str, display_name: str | None, group: str | None, allow_failure: bool
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"step": step, "display_name": display_name or step}
        if group is not None:
            data["group"] = group
        if allow_failure:
            data["allow_failure"] = True
        return data

    def ensure_child(
        self,
        task_name: str,
        task_data: dict[str, Any],
        *,
        step: str,
        task_type: str = TaskType.WORKER,
        display_name: str | None = None,
        group: str | None = None,
        dependencies: Iterable[WorkRequest] = (),
        allow_failure: bool = False,
        event_reactions: dict[str, Any] | None = None,
    ) -> WorkRequest:
        """
        The child identified by `step`, created (blocked until `dependencies` finish well)
        unless the workflow already has it. Its task data is validated as a user's would be.
        """
        existing = self.children_by_step().get(step)
        if existing is not None:
            return existing
        child = transitions.create(
            workspace=self.work_request.workspace,
            created_by=self.work_request.created_by,
            task_type=task_type,
            task_name=task_name,
            task_data=task_data,
            event_reactions=event_reactions,
            allow_server_actions=True,
            priority_base=self.work_request.priority_effective,
            parent=self.work_request,
            workflow_data=self._workflow_data(step, display_name, group, allow_failure),
            dependencies=dependencies,
        )
        self.children_by_step()[step] = child
        return child

    def ensure_sub_workflow(
        self,
        task_name: str,
        task_data: dict[str, Any],
        *,
        step: str,
        display_name: str | None = None,
        group: str | None = None,
        dependencies: Iterable[WorkRequest] = (),
        allow_failure: bool = False,
    ) -> WorkRequest:
        """A sub-workflow (its data validated by its class), shared internal collection."""
        existing = self.children_by_step().get(step)
        if existing is not None:
            return existing
        workflow_class = Workflow.class_from_name(task_name)
        child = transitions.create_workflow(
            workspace=self.work_request.workspace,
            created_by=self.work_request.created_by,
            task_name=task_name,
            task_data=workflow_class.validate_data(task_data),
            priority_base=self.work_request.priority_effective,
            parent=self.work_request,
            workflow_data=self._workflow_data(step, display_name, group, allow_failure),
            dependencies=dependencies,
        )
        self.children_by_step()[step] = child
        return child

    def ensure_synchronization_point(
        self,
        *,
        step: str,
        dependencies: Iterable[WorkRequest],
        display_name: str | None = None,
        group: str | None = None,
    ) -> WorkRequest:
        """An Internal step that completes as soon as its dependencies have (a barrier)."""
        return self.ensure_child(
            "synchronization_point",
            {},
            step=step,
            task_type=TaskType.INTERNAL,
            display_name=display_name,
            group=group,
            dependencies=dependencies,
        )

    def ensure_callback(
        self,
        *,
        step: str,
        dependencies: Iterable[WorkRequest] = (),
        display_name: str | None = None,
        group: str | None = None,
    ) -> WorkRequest:
        """An Internal `workflow` step: once runnable, it calls this workflow's `callback`."""
        return self.ensure_child(
            "workflow",
            {},
            step=step,
            task_type=TaskType.INTERNAL,
            display_name=display_name,
            group=group,
            dependencies=dependencies,
        )

    def ensure_delay(
        self,
        *,
        step: str,
        delay_until: datetime,
        dependencies: Iterable[WorkRequest] = (),
        display_name: str | None = None,
    ) -> WorkRequest:
        """A Wait `delay` step that completes once `delay_until` has passed."""
        return self.ensure_child(
            "delay",
            DelayData(delay_until=delay_until).model_dump(mode="json"),
            step=step,
            task_type=TaskType.WAIT,
            display_name=display_name,
            dependencies=dependencies,
        )

    # --- The internal collection -----------------------------------------------------------

    def internal_collection(self) -> Collection:
        """The root workflow's `debusine:workflow-internal` collection."""
        root = self.work_request
        while root.parent_id is not None:
            root = WorkRequest.objects.get(pk=root.parent_id)
        if root.internal_collection_id is None:
            raise WorkflowInputError(f"workflow {root.pk} has no internal collection")
        collection = Collection.objects.get(pk=root.internal_collection_id)
        return collection

    def provides_artifact(
        self,
        work_request: WorkRequest,
        category: str,
        name: str,
        data: dict[str, Any] | None = None,
    ) -> CollectionItem:
        """
        Promise that `work_request` provides an artifact of `category` named `prefix + name`
        in the internal collection: a `debusine:promise` item until it succeeds, when its
        artifact of that category takes the name (with `data` as the item's data).
        Idempotent: a name already promised or provided is left as it is.
        """
        collection = self.internal_collection()
        full_name = self.prefix + name
        item = CollectionItem.objects.filter(
            parent_collection=collection, name=full_name, removed_at__isnull=True
        ).first()
        if item is None:
            item = CollectionItem.objects.create(
                name=full_name,
                child_type=CollectionItemType.BARE,
                category=PROMISE_CATEGORY,
                parent_collection=collection,
                parent_category=collection.category,
                data={
                    **(data or {}),
                    "promise_work_request_id": work_request.pk,
                    "promise_workflow_id": self.work_request.pk,
                    "promise_category": category,
                },
                created_by_workflow=self.work_request,
            )
        reaction = {
            "action": "update-collection-with-artifacts",
            "collection": collection.pk,
            "variables": {**(data or {}), "name": full_name},
            "artifact_filters": {"category": category},
        }
        reactions = dict(work_request.event_reactions_json or {})
        on_success = list(reactions.get("on_success", []))
        if reaction not in on_success:
            on_success.append(reaction)
            reactions["on_success"] = on_success
            work_request.event_reactions_json = reactions
            work_request.save(update_fields=["event_reactions_json"])
        return item

    def promised_by(self, names: Sequence[str]) -> list[WorkRequest]:
        """
        The work requests that promised the internal collection's items `names` (full names)
        and have not provided them yet: what a child needing them must wait for.
        """
        items = CollectionItem.objects.filter(
            parent_collection=self.internal_collection(),
            name__in=list(names),
            removed_at__isnull=True,
            child_type=CollectionItemType.BARE,
            category=PROMISE_CATEGORY,
        )
        ids = [item.data.get("promise_work_request_id") for item in items]
        return list(WorkRequest.objects.filter(pk__in=[i for i in ids if isinstance(i, int)]))

    def requires_artifact(self, work_request: WorkRequest, lookup: Any) -> None:
        """
        Make `work_request` wait for whatever promised the internal-collection item that
        `lookup` (`internal@collections/name:NAME`, or a list of them) names.
        """
        lookups = lookup if isinstance(lookup, list) else [lookup]
        names = []
        for single in lookups:
            if isinstance(single, str) and single.startswith("internal@collections/"):
                segment = single.removeprefix("internal@collections/")
                names.append(segment.removeprefix("name:"))
        providers = [p for p in self.promised_by(names) if p.pk != work_request.pk]
        if not providers:
            return
        work_request.dependencies.add(*providers)
        if work_request.status == WorkRequestStatus.PENDING and any(
            provider.status in transitions.UNFINISHED for provider in providers
        ):
            work_request.status = WorkRequestStatus.BLOCKED
            work_request.save(update_fields=["status"])
        # A provider that already failed aborts it; finished ones let it go on.
        transitions.unblock_if_ready(work_request)
