"""
What every collection manager shares: adding artifacts as items (replacing the active item of
the same name), name lookups, and the registry that picks a manager by collection category.

A manager holds one collection. Subclasses say which artifact categories they accept, how an
artifact becomes an item (its name and per-item data), and which lookup segments they know
besides `name:NAME`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from debusine.server.db.models import (
    Artifact,
    Collection,
    CollectionItem,
    CollectionItemType,
    User,
    WorkRequest,
)


class ItemAdditionError(Exception):
    """The artifact cannot become an item of this collection (wrong category, bad data...)."""


class CollectionLookupError(LookupError):
    """A lookup segment this collection does not understand."""


class CollectionManager:
    """Adds items to one collection and finds them; the base knows only `name:` lookups."""

    #: Category of the collections this manager handles ("" for the generic manager).
    CATEGORY: ClassVar[str] = ""
    #: Artifact categories the collection holds (empty: it holds no artifacts).
    ARTIFACT_CATEGORIES: ClassVar[frozenset[str]] = frozenset()

    _registry: ClassVar[dict[str, type[CollectionManager]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.CATEGORY:
            CollectionManager._registry[cls.CATEGORY] = cls

    def __init__(self, collection: Collection) -> None:
        if self.CATEGORY and collection.category != self.CATEGORY:
            raise ValueError(f"{type(self).__name__} cannot manage {collection.category!r}")
        self.collection = collection

    @staticmethod
    def for_collection(collection: Collection) -> CollectionManager:
        """The manager of `collection`'s category (the generic one for other categories)."""
        manager_class = CollectionManager._registry.get(collection.category, CollectionManager)
        return manager_class(collection)

    # --- Adding -------------------------------------------------------------------------

    def accepts_artifact(self, category: str) -> bool:
        """Whether artifacts of `category` may become items."""
        return category in self.ARTIFACT_CATEGORIES

    def item_for_artifact(
        self, artifact: Artifact, variables: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The name and per-item data of `artifact` as an item; ItemAdditionError if invalid."""
        raise ItemAdditionError(f"{self.collection.category} collections hold no artifacts")

    def add_artifact(
        self,
        artifact: Artifact,
        *,
        user: User | None = None,
        workflow: WorkRequest | None = None,
        variables: dict[str, Any] | None = None,
        replace: bool = True,
    ) -> CollectionItem:
        """
        Add `artifact` as an item, in one transaction.

        With `replace`, the active item of the same name (if any) is removed first (it stays
        as history, with `removed_at` set); without it, a name in use is an ItemAdditionError.
        """
        if not self.accepts_artifact(artifact.category):
            raise ItemAdditionError(
                f"artifact {artifact.pk} is a {artifact.category!r} artifact: "
                f"{self.collection} accepts "
                + (", ".join(sorted(self.ARTIFACT_CATEGORIES)) or "no artifacts")
            )
        name, data = self.item_for_artifact(artifact, variables or {})
        try:
            with transaction.atomic():
                active = CollectionItem.objects.select_for_update().filter(
                    parent_collection=self.collection, name=name, removed_at__isnull=True
                )
                if replace:
                    active.update(
                        removed_at=timezone.now(),
                        removed_by_user=user,
                        removed_by_workflow=workflow,
                    )
                elif active.exists():
                    raise ItemAdditionError(f"{self.collection} already has an item {name!r}")
                return CollectionItem.objects.create(
                    name=name,
                    child_type=CollectionItemType.ARTIFACT,
                    category=artifact.category,
                    parent_collection=self.collection,
                    parent_category=self.collection.category,
                    artifact=artifact,
                    data=data,
                    created_by_user=user,
                    created_by_workflow=workflow,
                )
        except IntegrityError as error:
            raise ItemAdditionError(f"cannot add {name!r} to {self.collection}: {error}") from None

    # --- Looking up ---------------------------------------------------------------------

    def active_items(self) -> QuerySet[CollectionItem]:
        """The collection's active items."""
        return CollectionItem.objects.filter(
            parent_collection=self.collection, removed_at__isnull=True
        )

    def lookup(self, segment: str) -> CollectionItem | None:
        """
        The item a lookup segment names, or None when it names nothing. `name:NAME` works in
        every collection; others are the category's own. CollectionLookupError when the
        segment's kind is unknown here.
        """
        kind, colon, argument = segment.partition(":")
        if not colon:
            kind, argument = "name", segment
        if kind == "name":
            item: CollectionItem | None = (
                self.active_items().select_related("artifact", "collection").filter(name=argument)
            ).first()
            return item
        return self.lookup_segment(kind, argument)

    def lookup_segment(self, kind: str, argument: str) -> CollectionItem | None:
        """Resolve a category-specific segment `kind:argument` (the base knows none)."""
        raise CollectionLookupError(
            f"{self.collection.category} collections have no {kind!r} lookup"
        )

    def lookup_filter(self, key: str, value: Any) -> Q:
        """Item conditions for the `lookup__KEY` entry of a dictionary lookup."""
        raise CollectionLookupError(
            f"{self.collection.category} collections have no lookup filter {key!r}"
        )
