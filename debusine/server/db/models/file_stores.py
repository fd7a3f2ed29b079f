"""File stores, the files each holds, and the per-scope policies for using them."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class FileStoreBackend(models.TextChoices):
    """Implementations of the file store interface (`debusine.server.file_stores`)."""

    LOCAL = "Local", "Local"
    S3 = "S3", "S3"
    MEMORY = "Memory", "Memory"


class FileStore(models.Model):
    """A place where file contents live, addressed by SHA-256 and size."""

    DEFAULT_NAME = "Default"

    name = models.CharField(max_length=255, unique=True)
    backend = models.CharField(max_length=16, choices=FileStoreBackend.choices)
    configuration = models.JSONField(default=dict, blank=True)
    instance_wide = models.BooleanField(default=True, help_text="May be used by several scopes")
    soft_max_size = models.BigIntegerField(null=True, blank=True)
    max_size = models.BigIntegerField(null=True, blank=True)
    total_size = models.BigIntegerField(
        default=0, help_text="Sum of the sizes of the files in the store (kept by a trigger)"
    )
    provider_account = models.ForeignKey(
        "db.Asset", null=True, blank=True, on_delete=models.PROTECT, related_name="file_stores"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(max_size__isnull=True)
                | Q(soft_max_size__isnull=True)
                | Q(soft_max_size__lte=models.F("max_size")),
                name="db_filestore_soft_below_hard",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.backend})"


class FileInStore(models.Model):
    """A file present in a store."""

    store = models.ForeignKey(FileStore, on_delete=models.PROTECT, related_name="files_in_store")
    file = models.ForeignKey("db.File", on_delete=models.PROTECT, related_name="in_stores")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "file"], name="db_fileinstore_unique")
        ]

    def __str__(self) -> str:
        return f"{self.file} in {self.store.name}"


class FileStoreInScope(models.Model):
    """How a scope uses a store: priorities and policies."""

    scope = models.ForeignKey("db.Scope", on_delete=models.CASCADE)
    file_store = models.ForeignKey(FileStore, on_delete=models.PROTECT)
    upload_priority = models.IntegerField(null=True, blank=True)
    download_priority = models.IntegerField(null=True, blank=True)
    populate = models.BooleanField(default=False, help_text="Copy every scope file here")
    drain = models.BooleanField(default=False, help_text="Move every file away from here")
    drain_to = models.CharField(max_length=255, null=True, blank=True)
    read_only = models.BooleanField(default=False)
    write_only = models.BooleanField(default=False)
    soft_max_size = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "file_store"], name="db_filestoreinscope_unique"
            ),
            models.CheckConstraint(
                condition=~(Q(read_only=True) & Q(write_only=True)),
                name="db_filestoreinscope_not_read_and_write_only",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.file_store.name} in {self.scope.name}"
