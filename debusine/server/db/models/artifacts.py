"""Artifacts, the files they hold (content-addressed), relations and resumable uploads."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import models
from django.db.models import Q
from django.utils import timezone

from debusine.server.db.models.workspaces import Workspace

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from debusine.server.db.models.auth import User


class FileManager(models.Manager["File"]):
    """Finds or creates content-addressed files."""

    def get_or_create_by_hash(self, sha256: bytes, size: int) -> File:
        file, _ = self.get_or_create(sha256=sha256, size=size)
        return file


class File(models.Model):
    """File contents, identified by SHA-256 and size. Stored in one or more file stores."""

    sha256 = models.BinaryField(max_length=32)
    size = models.BigIntegerField()

    objects = FileManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sha256", "size"], name="db_file_unique_hash_size"),
            models.CheckConstraint(condition=Q(size__gte=0), name="db_file_size_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.hash_hex}-{self.size}"

    @property
    def hash_hex(self) -> str:
        return bytes(self.sha256).hex()

    @classmethod
    def empty_sha256(cls) -> bytes:
        return hashlib.sha256(b"").digest()


class ArtifactQuerySet(models.QuerySet["Artifact"]):
    """Queries over artifacts."""

    def can_display(self, user: User | AnonymousUser) -> ArtifactQuerySet:
        return self.filter(workspace__in=Workspace.objects.can_display(user))


class Artifact(models.Model):
    """A typed piece of output or input: a category, JSON data and a set of files."""

    category = models.CharField(max_length=255)
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="artifacts")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expiration_delay = models.DurationField(null=True, blank=True)
    created_by = models.ForeignKey(
        "db.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="artifacts"
    )
    created_by_work_request = models.ForeignKey(
        "db.WorkRequest",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="created_artifacts",
    )
    original_artifact = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="copies"
    )
    files = models.ManyToManyField(File, through="db.FileInArtifact", related_name="artifacts")

    objects = ArtifactQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["category"], name="db_artifact_category")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.category}"

    @property
    def expire_at(self) -> datetime | None:
        delay = self.expiration_delay
        if delay is None:
            delay = self.workspace.default_expiration_delay
        if not delay:
            return None
        return self.created_at + delay

    def is_complete(self) -> bool:
        """Whether every file of the artifact has been uploaded and verified."""
        return not self.fileinartifact_set.filter(complete=False).exists()


class ArtifactRelationType(models.TextChoices):
    EXTENDS = "extends", "Extends"
    RELATES_TO = "relates-to", "Relates to"
    BUILT_USING = "built-using", "Built using"


class ArtifactRelation(models.Model):
    """A typed link from one artifact to another."""

    artifact = models.ForeignKey(Artifact, on_delete=models.CASCADE, related_name="relations")
    target = models.ForeignKey(Artifact, on_delete=models.CASCADE, related_name="targeted_by")
    type = models.CharField(max_length=16, choices=ArtifactRelationType.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["artifact", "target", "type"], name="db_artifactrelation_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.artifact_id} {self.type} {self.target_id}"


class FileInArtifact(models.Model):
    """A file at a path inside an artifact; `complete` once its contents are verified."""

    artifact = models.ForeignKey(Artifact, on_delete=models.CASCADE)
    path = models.CharField(max_length=500)
    file = models.ForeignKey(File, on_delete=models.PROTECT)
    complete = models.BooleanField(default=False)
    content_type = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["artifact", "path"], name="db_fileinartifact_unique")
        ]

    def __str__(self) -> str:
        return f"{self.artifact_id}:{self.path}"


class FileUpload(models.Model):
    """A resumable upload in progress: bytes so far live in a file outside every store."""

    file_in_artifact = models.OneToOneField(
        FileInArtifact, on_delete=models.CASCADE, related_name="upload"
    )
    path = models.CharField(max_length=500, help_text="Relative to DEBUSINE_UPLOAD_DIRECTORY")
    created_at = models.DateTimeField(default=timezone.now)
    last_activity_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"upload of {self.file_in_artifact}"
