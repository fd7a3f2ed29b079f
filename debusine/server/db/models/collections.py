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


class CollectionRelationType(models.TextChoices):
    """How one collection relates to another (Debusine 0.16's suite relations)."""

    SUITE_FORKED_FROM = "suite-forked-from", "Forked from"
    SUITE_BASED_ON = "suite-based-on", "Based on"
    SUITE_REQUIRES = "suite-requires", "Requires"
    SUITE_TARGETING = "suite-targeting", "Targeting"
    SUITE_DEFAULT_QA_RESULTS = "suite-default-qa-results", "Default QA results"


class CollectionRelation(models.Model):
    """`source` stands in relation `type` to `target`; `position` orders `suite-requires`."""

    source = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="relations")
    target = models.ForeignKey(
        Collection, on_delete=models.CASCADE, related_name="reverse_relations"
    )
    type = models.CharField(max_length=32, choices=CollectionRelationType.choices)
    position = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "type", "target"], name="db_collectionrelation_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.type} {self.target}"


class ExternalToken(models.Model):
    """
    A credential for reading collections from outside the API (an APT archive, say): Debusine
    0.16's "external-user" token, made for a user name that need not be an account here. Only
    its SHA-256 is stored. It never authenticates an API call; it holds only the roles granted
    to it on collections.
    """

    hash = models.CharField(max_length=64, unique=True)
    username = models.CharField(max_length=255)
    comment = models.CharField(max_length=100, blank=True, default="")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"external token {self.hash[:12]}… ({self.username})"


class CollectionTokenGrant(models.Model):
    """A role (`viewer`) on a collection granted to an external token."""

    collection = models.ForeignKey(
        Collection, on_delete=models.CASCADE, related_name="token_grants"
    )
    token = models.ForeignKey(ExternalToken, on_delete=models.CASCADE, related_name="grants")
    role = models.CharField(max_length=16)
    comment = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["collection", "token", "role"], name="db_collectiontokengrant_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.role} on {self.collection} for {self.token}"
