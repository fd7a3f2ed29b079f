"""Artifacts, the files they hold (content-addressed), relations and resumable uploads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from django.db import models
from django.db.models import Q
from django.utils import timezone

from debusine.protocol.artifacts import MAX_PATH_LENGTH
from debusine.server.db.models.workspaces import Workspace

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from debusine.server.db.models.auth import User
    from debusine.server.db.models.scopes import Scope


class FileManager(models.Manager["File"]):
    """Finds or creates content-addressed files."""

    def get_or_create_by_hash(self, sha256: bytes, size: int) -> File:
        file, _ = self.get_or_create(sha256=sha256, size=size)
        return file

    def get_or_create_many(
        self, hashes: Iterable[tuple[bytes, int]]
    ) -> dict[tuple[bytes, int], File]:
        """
        Find or create the files with these (sha256, size): two queries however many there are.

        Inserting in a fixed order keeps concurrent requests with overlapping files from
        deadlocking; a row inserted concurrently is found by the select once its transaction
        commits, since ON CONFLICT waits for it.
        """
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        self.bulk_create(
            [File(sha256=sha256, size=size) for sha256, size in wanted], ignore_conflicts=True
        )
        wanted_set = set(wanted)
        found: dict[tuple[bytes, int], File] = {}
        for file in self.filter(sha256__in=[sha256 for sha256, _ in wanted]):
            key = (bytes(file.sha256), file.size)
            if key in wanted_set:
                found[key] = file
        return found


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


class ArtifactQuerySet(models.QuerySet["Artifact"]):
    """Queries over artifacts."""

    def can_display(self, user: User | AnonymousUser) -> ArtifactQuerySet:
        return self.filter(workspace__in=Workspace.objects.can_display(user))

    def in_scope(self, scope: Scope) -> ArtifactQuerySet:
        return self.filter(workspace__scope=scope)

    def create_with_files(
        self,
        *,
        workspace: Workspace,
        category: str,
        data: dict[str, Any],
        files: Sequence[NewArtifactFile],
        created_by: User | None = None,
        created_by_work_request_id: int | None = None,
        expiration_delay: timedelta | None = None,
    ) -> tuple[Artifact, list[FileInArtifact]]:
        """
        Create an artifact and its file rows in a fixed number of queries.

        A file is complete at once when it is empty, or when an artifact of the same workspace
        already holds it complete: its contents are then known to be readable from there.
        Contents present only in another workspace must be uploaded again, so that knowing a
        hash never grants access to a file one cannot see.
        """
        artifact = self.create(
            workspace=workspace,
            category=category,
            data=data,
            created_by=created_by,
            created_by_work_request_id=created_by_work_request_id,
            expiration_delay=expiration_delay,
        )
        by_hash = File.objects.get_or_create_many((new.sha256, new.size) for new in files)
        complete_in_workspace: set[int] = set()
        if by_hash:
            complete_in_workspace = set(
                FileInArtifact.objects.filter(
                    file__in=[file.pk for file in by_hash.values()],
                    complete=True,
                    artifact__workspace=workspace,
                )
                .values_list("file_id", flat=True)
                .distinct()
            )
        rows = []
        for new in sorted(files, key=lambda new: new.path):
            file = by_hash[(new.sha256, new.size)]
            rows.append(
                FileInArtifact(
                    artifact=artifact,
                    path=new.path,
                    file=file,
                    complete=new.size == 0 or file.pk in complete_in_workspace,
                    content_type=new.content_type,
                )
            )
        FileInArtifact.objects.bulk_create(rows)
        return artifact, rows


class NewArtifactFile(NamedTuple):
    """A file announced for a new artifact: where it goes and what it will contain."""

    path: str
    sha256: bytes
    size: int
    content_type: str | None = None


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
        """When this artifact may be deleted (None: never)."""
        return self.workspace.expiry(self.created_at, self.expiration_delay)

    def written_by_worker(self, worker_id: int) -> bool:
        """
        Whether `worker` may write to this artifact (upload its files, change its relations).

        Workers write only the outputs of work assigned to them: a worker token must not be a
        way to change artifacts of any workspace of any scope.
        """
        producer = self.created_by_work_request
        return producer is not None and producer.worker_id == worker_id

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
    path = models.CharField(max_length=MAX_PATH_LENGTH)
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
    hashed_size = models.BigIntegerField(
        default=0, help_text="How many bytes from the start of the file sha256_state covers"
    )
    sha256_state = models.BinaryField(
        null=True,
        blank=True,
        help_text="The SHA-256 state after hashed_size bytes (api.resumable_sha256), if any",
    )

    def __str__(self) -> str:
        return f"upload of {self.file_in_artifact}"
