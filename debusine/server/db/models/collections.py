"""Collections of artifacts, bare data and other collections, with item history."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class CollectionRetention(models.TextChoices):
    """Whether membership of the collection keeps artifacts from expiring."""

    NEVER = "never", "Never"
    WORKFLOW = "workflow", "While the workflow runs"
    ALWAYS = "always", "Always"


class Collection(models.Model):
    """A named, typed set of items in a workspace (a suite, the build environments, ...)."""

    name = models.CharField(max_length=255)
    category = models.CharField(max_length=255)
    workspace = models.ForeignKey(
        "db.Workspace", on_delete=models.PROTECT, related_name="collections"
    )
    full_history_retention_period = models.DurationField(null=True, blank=True)
    metadata_only_retention_period = models.DurationField(null=True, blank=True)
    retains_artifacts = models.CharField(
        max_length=8, choices=CollectionRetention.choices, default=CollectionRetention.ALWAYS
    )
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["name", "category", "workspace"], name="db_collection_unique"
            ),
            models.CheckConstraint(
                condition=~Q(name__startswith="_") | Q(name="_"),
                name="db_collection_name_not_reserved",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.category}"


class CollectionItemType(models.TextChoices):
    BARE = "b", "Bare"
    ARTIFACT = "a", "Artifact"
    COLLECTION = "c", "Collection"


class CollectionItem(models.Model):
    """An item in a collection; removed items stay (with `removed_at`) for history."""

    name = models.CharField(max_length=255)
    child_type = models.CharField(max_length=1, choices=CollectionItemType.choices)
    category = models.CharField(max_length=255)
    parent_collection = models.ForeignKey(
        Collection, on_delete=models.PROTECT, related_name="child_items"
    )
    parent_category = models.CharField(max_length=255)
    artifact = models.ForeignKey(
        "db.Artifact",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="collection_items",
    )
    collection = models.ForeignKey(
        Collection,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="collection_items",
    )
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by_user = models.ForeignKey(
        "db.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by_workflow = models.ForeignKey(
        "db.WorkRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by_user = models.ForeignKey(
        "db.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    removed_by_workflow = models.ForeignKey(
        "db.WorkRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            # Only one active item per name; removed ones are history.
            models.UniqueConstraint(
                fields=["parent_collection", "name"],
                condition=Q(removed_at__isnull=True),
                name="db_collectionitem_unique_active_name",
            ),
            # The reference matches its target to its type: a removed artifact item may
            # have lost its artifact (retention), so only "not both" is enforced.
            models.CheckConstraint(
                condition=(Q(child_type="b") & Q(artifact__isnull=True, collection__isnull=True))
                | (Q(child_type="a") & Q(collection__isnull=True))
                | (Q(child_type="c") & Q(artifact__isnull=True)),
                name="db_collectionitem_target_matches_type",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} in {self.parent_collection}"
