"""Assets: data without files (signing keys, cloud provider accounts) and their roles."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AssetCategory(models.TextChoices):
    SIGNING_KEY = "debusine:signing-key", "Signing key"
    CLOUD_PROVIDER_ACCOUNT = "debusine:cloud-provider-account", "Cloud provider account"


class Asset(models.Model):
    """A typed piece of data, owned by a workspace (or by the instance when it has none)."""

    category = models.CharField(max_length=255, choices=AssetCategory.choices)
    workspace = models.ForeignKey(
        "db.Workspace", null=True, blank=True, on_delete=models.PROTECT, related_name="assets"
    )
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        "db.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_work_request = models.ForeignKey(
        "db.WorkRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"#{self.pk} {self.category}"


class AssetRoles(models.TextChoices):
    OWNER = "owner", "Owner"


class AssetRole(models.Model):
    """A role on an asset, granted to a group."""

    resource = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="roles")
    group = models.ForeignKey("db.Group", on_delete=models.CASCADE, related_name="asset_roles")
    role = models.CharField(max_length=16, choices=AssetRoles.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["resource", "group", "role"], name="db_assetrole_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.group}: {self.role} of asset {self.resource_id}"


class AssetUsage(models.Model):
    """Permission for a workspace to use an asset (e.g. sign with a key)."""

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="usages")
    workspace = models.ForeignKey(
        "db.Workspace", on_delete=models.CASCADE, related_name="asset_usages"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["asset", "workspace"], name="db_assetusage_unique")
        ]

    def __str__(self) -> str:
        return f"asset {self.asset_id} in {self.workspace}"


class AssetUsageRoles(models.TextChoices):
    SIGNER = "signer", "Signer"


class AssetUsageRole(models.Model):
    """A role on an asset usage, granted to a group."""

    resource = models.ForeignKey(AssetUsage, on_delete=models.CASCADE, related_name="roles")
    group = models.ForeignKey(
        "db.Group", on_delete=models.CASCADE, related_name="asset_usage_roles"
    )
    role = models.CharField(max_length=16, choices=AssetUsageRoles.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["resource", "group", "role"], name="db_assetusagerole_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.group}: {self.role} of {self.resource}"
