"""File stores, the files each holds, and the per-scope policies for using them."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class FileStoreBackend(models.TextChoices):
    """Implementations of the file store interface (`debusine.server.file_stores`)."""

    LOCAL = "Local", "Local"
    S3 = "S3", "S3"
    MEMORY = "Memory", "Memory"


#: Configuration keys of an S3 store, and the type of each value.
S3_CONFIGURATION_KEYS: dict[str, type] = {
    "bucket_name": str,
    "storage_class": str,
    "endpoint_url": str,
    "region_name": str,
    "access_key_id": str,
    "secret_access_key": str,
    "multipart_threshold": int,
    "multipart_chunk_size": int,
    "connect_timeout": int,
    "read_timeout": int,
    "max_attempts": int,
}

#: S3 refuses multipart parts smaller than this (except the last one).
S3_MINIMUM_PART_SIZE = 5 * 1024 * 1024


def _validate_s3_configuration(configuration: dict[str, Any]) -> None:
    if not configuration.get("bucket_name"):
        raise ValidationError({"configuration": "an S3 store needs a bucket_name"})
    for key, expected in S3_CONFIGURATION_KEYS.items():
        value = configuration.get(key)
        if value is None:
            continue
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ValidationError(
                {"configuration": f"{key} must be a {'string' if expected is str else 'number'}"}
            )
    if ("access_key_id" in configuration) != ("secret_access_key" in configuration):
        raise ValidationError(
            {"configuration": "give both access_key_id and secret_access_key, or neither"}
        )
    for key in ("multipart_threshold", "multipart_chunk_size"):
        if key in configuration and configuration[key] < S3_MINIMUM_PART_SIZE:
            raise ValidationError(
                {"configuration": f"{key} must be at least {S3_MINIMUM_PART_SIZE} bytes"}
            )
    for key in ("connect_timeout", "read_timeout", "max_attempts"):
        if key in configuration and configuration[key] < 1:
            raise ValidationError({"configuration": f"{key} must be at least 1"})


def validate_file_store_configuration(backend: str, configuration: Any) -> None:
    """
    Raise ValidationError unless `configuration` suits `backend`.

    Local: `base_directory` (optional, an absolute path; the `Default` store falls back to
    DEBUSINE_STORE_DIRECTORY). Memory: `name` (optional string). S3: `bucket_name` plus the
    optional keys of `S3_CONFIGURATION_KEYS` (see `debusine.server.file_stores.s3`).
    """
    allowed: dict[str, set[str]] = {
        FileStoreBackend.LOCAL: {"base_directory"},
        FileStoreBackend.MEMORY: {"name"},
        FileStoreBackend.S3: set(S3_CONFIGURATION_KEYS),
    }
    if backend not in allowed:
        raise ValidationError(
            {"backend": f"unsupported backend {backend!r}: expected {' or '.join(allowed)}"}
        )
    if not isinstance(configuration, dict):
        raise ValidationError({"configuration": "must be a mapping"})
    unknown = sorted(set(configuration) - allowed[backend])
    if unknown:
        raise ValidationError(
            {"configuration": f"unknown keys for a {backend} store: {', '.join(unknown)}"}
        )
    if backend == FileStoreBackend.LOCAL and "base_directory" in configuration:
        directory = configuration["base_directory"]
        if not isinstance(directory, str) or not PurePosixPath(directory).is_absolute():
            raise ValidationError({"configuration": "base_directory must be an absolute path"})
    if backend == FileStoreBackend.MEMORY and not isinstance(configuration.get("name", ""), str):
        raise ValidationError({"configuration": "name must be a string"})
    if backend == FileStoreBackend.S3:
        _validate_s3_configuration(configuration)


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

    def clean(self) -> None:
        validate_file_store_configuration(self.backend, self.configuration)
        if (
            self.backend == FileStoreBackend.LOCAL
            and self.name != self.DEFAULT_NAME
            and not self.configuration.get("base_directory")
        ):
            # Only the Default store falls back to DEBUSINE_STORE_DIRECTORY.
            raise ValidationError({"configuration": "a Local store needs a base_directory"})
        if self.provider_account is not None and (
            self.provider_account.category != "debusine:cloud-provider-account"
        ):
            raise ValidationError(
                {"provider_account": "must be a debusine:cloud-provider-account asset"}
            )
        for field in ("soft_max_size", "max_size"):
            if (getattr(self, field) or 0) < 0:
                raise ValidationError({field: "must not be negative"})
        if (
            self.soft_max_size is not None
            and self.max_size is not None
            and self.soft_max_size > self.max_size
        ):
            raise ValidationError({"soft_max_size": "must not be larger than max_size"})


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

    def clean(self) -> None:
        """Check the policies: they must make sense together and within the scope."""
        if self.read_only and self.write_only:
            raise ValidationError("a file store cannot be both read-only and write-only")
        if self.soft_max_size is not None and self.soft_max_size < 0:
            raise ValidationError({"soft_max_size": "must not be negative"})
        if (
            not self.file_store.instance_wide
            and FileStoreInScope.objects.filter(file_store=self.file_store)
            .exclude(scope=self.scope)
            .exists()
        ):
            raise ValidationError(
                f"file store {self.file_store.name} is not instance-wide and is already used"
                " by another scope"
            )
        if self.drain_to is not None:
            if self.drain_to == self.file_store.name:
                raise ValidationError({"drain_to": "a store cannot drain to itself"})
            if not FileStoreInScope.objects.filter(
                scope=self.scope, file_store__name=self.drain_to
            ).exists():
                raise ValidationError(
                    {"drain_to": f"scope {self.scope.name} has no file store {self.drain_to}"}
                )
