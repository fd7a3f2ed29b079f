"""
Lookups: how task data names artifacts and collections (reference §14), resolved on the server.

- An integer is an artifact ID (or a collection ID where a collection is expected).
- A string is `FIRST/SEGMENT/...`. FIRST is `NAME@CATEGORY` (a collection of the workspace, or
  of the workspaces it inherits from; `_@CATEGORY` names a singleton), `NNN@artifacts` or
  `NNN@collections`; a FIRST without `@` takes the context's default category. Each further
  segment is looked up in the collection found so far: `name:NAME` (the default when the
  segment has no colon) or a segment the collection's category defines (`match:...` for
  environments, `source:...` for suites...).
- A dictionary looks for the active items of one collection: `collection` (a lookup),
  `child_type` (bare, artifact, collection, artifact-or-promise or any; default artifact),
  `category`, `name`, `data__KEY`, each with an optional `__exact`, `__contains`,
  `__startswith` or `__endswith` suffix, and `lookup__KEY` (a filter the collection's category
  defines).
- A list is the union of its lookups, in order.

What a lookup can see: the work request's workspace (and those it inherits from), and the
artifacts and collections of every workspace its creator may see.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import Q
from django.db.models.fields.json import KT

from debusine.server.collections import CollectionLookupError, CollectionManager
from debusine.server.db.models import (
    Artifact,
    Collection,
    CollectionItem,
    User,
    WorkRequest,
    Workspace,
)
from debusine.tasks import Lookup, LookupFailedError, LookupResult

EXPECT_TYPES = ("bare", "artifact", "collection", "artifact-or-promise", "any")

#: Item types each expected type accepts.
ACCEPTED_TYPES = {
    "bare": {"b"},
    "artifact": {"a"},
    "collection": {"c"},
    "artifact-or-promise": {"a", "b"},
    "any": {"a", "b", "c"},
}

TYPE_NAMES = {"a": "artifact", "b": "bare", "c": "collection"}

MATCHER_KINDS = ("exact", "contains", "startswith", "endswith")

PROMISE_CATEGORY = "debusine:promise"

_ID_FIRST_SEGMENT = re.compile(r"^([0-9]+)@(artifacts|collections)$")


class LookupNoMatchError(LookupFailedError):
    """A well-formed lookup that found nothing (the API answers 404 "No matches")."""


class InvalidLookupError(LookupFailedError):
    """A lookup that cannot be resolved as written (the API answers 400 "Lookup error")."""


def _describe(lookup: Any) -> str:
    return repr(lookup)


class LookupContext:
    """Resolves lookups in one workspace for one user."""

    def __init__(
        self,
        workspace: Workspace,
        user: User | AnonymousUser,
        internal_collection: Collection | None = None,
    ) -> None:
        """`internal_collection`: what `internal@collections` names (inside a workflow)."""
        self.workspace = workspace
        self.user = user
        self.internal_collection = internal_collection
        self._collections: dict[tuple[str, str], Collection] = {}

    # --- Visibility -----------------------------------------------------------------------

    def visible_workspaces(self) -> Q:
        """Workspaces whose artifacts and collections the lookups may return."""
        if isinstance(self.user, User) and self.user.is_system:
            # The server's own user: everything in the workspace's scope.
            return Q(workspace__scope_id=self.workspace.scope_id)
        return Q(workspace__in=Workspace.objects.can_display(self.user)) | Q(
            workspace_id=self.workspace.pk
        )

    def search_order(self) -> list[Workspace]:
        """The workspace, then those it inherits from (depth first, each once)."""
        order: list[Workspace] = []
        seen: set[int] = set()
        pending = [self.workspace]
        while pending:
            workspace = pending.pop(0)
            if workspace.pk in seen:
                continue
            seen.add(workspace.pk)
            order.append(workspace)
            pending[0:0] = workspace.inheritance_chain()
        return order

    def find_collection(self, name: str, category: str) -> Collection:
        """The collection `name@category` of the workspace or what it inherits (and can see)."""
        key = (name, category)
        if key in self._collections:
            return self._collections[key]
        order = self.search_order()
        candidates = {
            collection.workspace_id: collection
            for collection in Collection.objects.filter(
                self.visible_workspaces(),
                name=name,
                category=category,
                workspace__in=[workspace.pk for workspace in order],
            )
        }
        for workspace in order:
            if workspace.pk in candidates:
                self._collections[key] = candidates[workspace.pk]
                return candidates[workspace.pk]
        raise LookupNoMatchError(
            f"collection '{name}@{category}' does not exist in workspace "
            f"{self.workspace.name!r} (or is hidden)"
        )

    # --- Single lookups ---------------------------------------------------------------------

    def lookup_single(
        self, lookup: Lookup, *, expect_type: str = "any", default_category: str | None = None
    ) -> LookupResult:
        """Exactly one match of `lookup`; LookupNoMatchError or InvalidLookupError otherwise."""
        check_expect_type(expect_type)
        if isinstance(lookup, dict):
            results = self._lookup_dict(lookup, expect_type, default_category)
            if not results:
                raise LookupNoMatchError(f"lookup {_describe(lookup)} matched nothing")
            if len(results) > 1:
                raise InvalidLookupError(
                    f"lookup {_describe(lookup)} has multiple matches ({len(results)}): "
                    "a single one is needed here"
                )
            return results[0]
        if isinstance(lookup, bool) or not isinstance(lookup, int | str):
            raise InvalidLookupError(
                f"invalid lookup {_describe(lookup)}: expected an integer, a string or a "
                "dictionary"
            )
        try:
            result = self._lookup_string(lookup, expect_type, default_category)
        except LookupNoMatchError as error:
            raise LookupNoMatchError(
                f"lookup {_describe(lookup)} matched nothing: {error}"
            ) from None
        if result.result_type not in ACCEPTED_TYPES[expect_type]:
            raise InvalidLookupError(
                f"lookup {_describe(lookup)} is of type "
                f"{TYPE_NAMES[result.result_type]!r} instead of expected {expect_type!r}"
            )
        return result

    def _segments(
        self, lookup: int | str, expect_type: str, default_category: str | None
    ) -> list[str]:
        if isinstance(lookup, int):
            if expect_type in ("artifact", "artifact-or-promise"):
                return [f"{lookup}@artifacts"]
            if expect_type == "collection":
                return [f"{lookup}@collections"]
            raise InvalidLookupError(
                f"integer lookup {lookup} needs a context that expects an artifact or a collection"
            )
        if not lookup:
            raise InvalidLookupError("empty lookup")
        segments = lookup.split("/")
        if "@" not in segments[0]:
            if default_category is None:
                raise InvalidLookupError(
                    f"{segments[0]!r} does not name a category (NAME@CATEGORY) and this "
                    "context has no default"
                )
            segments[0] = f"{segments[0]}@{default_category}"
        if any(not segment for segment in segments):
            raise InvalidLookupError(f"lookup {lookup!r} has an empty segment")
        return segments

    def _first_segment(self, segment: str) -> LookupResult:
        match = _ID_FIRST_SEGMENT.match(segment)
        if match is not None:
            object_id = int(match[1])
            if match[2] == "artifacts":
                if not Artifact.objects.filter(self.visible_workspaces(), pk=object_id).exists():
                    raise LookupNoMatchError(f"artifact {object_id} does not exist or is hidden")
                return LookupResult("a", artifact=object_id)
            if not Collection.objects.filter(self.visible_workspaces(), pk=object_id).exists():
                raise LookupNoMatchError(f"collection {object_id} does not exist or is hidden")
            return LookupResult("c", collection=object_id)
        name, _, category = segment.rpartition("@")
        if segment == "internal@collections":
            if self.internal_collection is None:
                raise InvalidLookupError("internal@collections is only valid inside a workflow")
            self._collections[("internal", "collections")] = self.internal_collection
            return LookupResult("c", collection=self.internal_collection.pk)
        if not name or not category:
            raise InvalidLookupError(f"invalid lookup segment {segment!r}: expected NAME@CATEGORY")
        return LookupResult("c", collection=self.find_collection(name, category).pk)

    def _lookup_string(
        self, lookup: int | str, expect_type: str, default_category: str | None
    ) -> LookupResult:
        segments = self._segments(lookup, expect_type, default_category)
        result = self._first_segment(segments[0])
        for position, segment in enumerate(segments[1:], start=1):
            container = "/".join(segments[:position])
            if result.result_type != "c" or result.collection is None:
                raise InvalidLookupError(
                    f"{container!r} is of type {TYPE_NAMES[result.result_type]!r}, not a "
                    "collection"
                )
            collection = self._collection_by_id(result.collection)
            try:
                item = CollectionManager.for_collection(collection).lookup(segment)
            except CollectionLookupError as error:
                raise InvalidLookupError(f"lookup {lookup!r}: {error}") from None
            if item is None:
                raise LookupNoMatchError(f"{container!r} has no item {segment!r}")
            result = item_result(item)
        return result

    def _collection_by_id(self, collection_id: int) -> Collection:
        for collection in self._collections.values():
            if collection.pk == collection_id:
                return collection
        return Collection.objects.get(pk=collection_id)

    # --- Dictionary and multiple lookups ----------------------------------------------------

    def _lookup_dict(
        self, lookup: dict[str, Any], expect_type: str, default_category: str | None
    ) -> list[LookupResult]:
        if "collection" not in lookup:
            raise InvalidLookupError(f"dictionary lookup {lookup!r} has no 'collection'")
        child_type = lookup.get("child_type", "artifact")
        if child_type not in EXPECT_TYPES:
            raise InvalidLookupError(
                f"invalid child_type {child_type!r}: expected one of {', '.join(EXPECT_TYPES)}"
            )
        if expect_type != "any" and not (
            child_type == expect_type
            or (expect_type == "artifact-or-promise" and child_type in ("artifact", "bare"))
        ):
            raise InvalidLookupError(
                f"dictionary lookup of child_type {child_type!r} where {expect_type!r} is expected"
            )
        collection_result = self.lookup_single(
            lookup["collection"], expect_type="collection", default_category=default_category
        )
        assert collection_result.collection is not None
        collection = self._collection_by_id(collection_result.collection)
        manager = CollectionManager.for_collection(collection)
        items = manager.active_items()
        if child_type == "artifact-or-promise":
            items = items.filter(Q(child_type="a") | Q(child_type="b", category=PROMISE_CATEGORY))
        elif child_type != "any":
            items = items.filter(
                child_type={"bare": "b", "artifact": "a", "collection": "c"}[child_type]
            )
        for key, value in lookup.items():
            if key in ("collection", "child_type"):
                continue
            if key == "category":
                items = items.filter(category=value)
                continue
            words = key.split("__")
            try:
                if words[0] == "name" and len(words) <= 2:
                    kind = _matcher_kind(words[1] if len(words) == 2 else "exact", key)
                    items = items.filter(**{f"name__{kind}": _matcher_value(value, key)})
                elif words[0] == "data" and len(words) in (2, 3) and words[1]:
                    kind = _matcher_kind(words[2] if len(words) == 3 else "exact", key)
                    annotation = f"_data_{len(items.query.annotations)}"
                    if kind == "exact" and not isinstance(value, str):
                        items = items.filter(**{f"data__{words[1]}": value})
                    else:
                        items = items.annotate(**{annotation: KT(f"data__{words[1]}")}).filter(
                            **{f"{annotation}__{kind}": _matcher_value(value, key)}
                        )
                elif words[0] == "lookup" and len(words) == 2 and words[1]:
                    items = items.filter(manager.lookup_filter(words[1], value))
                else:
                    raise InvalidLookupError(f"unknown key {key!r} in dictionary lookup")
            except CollectionLookupError as error:
                raise InvalidLookupError(f"dictionary lookup {lookup!r}: {error}") from None
        return [item_result(item) for item in items.order_by("id")]

    def lookup_multiple(
        self,
        lookup: Lookup | list[Lookup],
        *,
        expect_type: str = "any",
        default_category: str | None = None,
    ) -> list[LookupResult]:
        """
        Every match: a dictionary lookup gives all its items (possibly none); a list gives
        the union of its lookups in order, where each string or integer must match.
        """
        check_expect_type(expect_type)
        alternatives = lookup if isinstance(lookup, list) else [lookup]
        results: list[LookupResult] = []
        for alternative in alternatives:
            if isinstance(alternative, dict):
                found = self._lookup_dict(alternative, expect_type, default_category)
            else:
                found = [
                    self.lookup_single(
                        alternative, expect_type=expect_type, default_category=default_category
                    )
                ]
            for result in found:
                if result not in results:
                    results.append(result)
        return results


def _matcher_kind(kind: str, key: str) -> str:
    if kind not in MATCHER_KINDS:
        raise InvalidLookupError(
            f"unknown matcher {kind!r} in {key!r}: expected one of {', '.join(MATCHER_KINDS)}"
        )
    return kind


def _matcher_value(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise InvalidLookupError(f"{key!r} needs a string, not {value!r}")
    return value


def item_result(item: CollectionItem) -> LookupResult:
    return LookupResult(
        item.child_type,
        collection_item=item.pk,
        artifact=item.artifact_id,
        collection=item.collection_id,
    )


def check_expect_type(expect_type: str) -> None:
    if expect_type not in EXPECT_TYPES:
        raise InvalidLookupError(
            f"invalid expect_type {expect_type!r}: expected one of {', '.join(EXPECT_TYPES)}"
        )


def workflow_internal_collection(work_request: WorkRequest) -> Collection | None:
    """The internal collection of the root of `work_request`'s workflow tree, if it is in one."""
    root = work_request
    while root.parent_id is not None:
        root = WorkRequest.objects.select_related("internal_collection").get(pk=root.parent_id)
    return root.internal_collection


class ServerLookupResolver:
    """
    The server's `LookupResolver` for one work request: lookups in its workspace, with what
    its creator may see. Errors are LookupFailedError (LookupNoMatchError when nothing
    matched, InvalidLookupError when the lookup itself is wrong).
    """

    def __init__(self, work_request: WorkRequest) -> None:
        self.work_request = work_request
        self.context = LookupContext(
            work_request.workspace,
            work_request.created_by,
            internal_collection=workflow_internal_collection(work_request),
        )

    def lookup_single(
        self, lookup: Lookup, *, expect_type: str, default_category: str | None = None
    ) -> LookupResult:
        return self.context.lookup_single(
            lookup, expect_type=expect_type, default_category=default_category
        )

    def lookup_multiple(
        self,
        lookup: Lookup | list[Lookup],
        *,
        expect_type: str,
        default_category: str | None = None,
    ) -> list[LookupResult]:
        return self.context.lookup_multiple(
            lookup, expect_type=expect_type, default_category=default_category
        )
