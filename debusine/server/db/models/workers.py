"""Workers: external, Celery and signing workers, their tokens and metadata."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from debusine.server.db.models.auth import Token

#: How long the activation token printed by `debusine-admin worker create` can be used.
ACTIVATION_TOKEN_LIFETIME = timedelta(minutes=15)


class WorkerType(models.TextChoices):
    """Kinds of worker."""

    EXTERNAL = "external", "External"
    CELERY = "celery", "Celery"
    SIGNING = "signing", "Signing"


def slugify_fqdn(fqdn: str) -> str:
    """Turn a host name into a worker name: dots become dashes, other oddities go."""
    slug = re.sub(r"[^a-z0-9-]+", "-", fqdn.lower().replace(".", "-")).strip("-")
    return slug or "worker"


class WorkerQuerySet(models.QuerySet["Worker"]):
    """Queries over workers."""

    def connected(self) -> WorkerQuerySet:
        return self.filter(connected_at__isnull=False)

    def with_enabled_token(self) -> WorkerQuerySet:
        return self.filter(token__enabled=True)


class WorkerManager(models.Manager["Worker"]):
    """Creates workers with unique names derived from their host names."""

    def get_queryset(self) -> WorkerQuerySet:
        return WorkerQuerySet(self.model, using=self._db)

    def connected(self) -> WorkerQuerySet:
        return self.get_queryset().connected()

    def unique_name(self, fqdn: str) -> str:
        """Return slug(fqdn), or slug(fqdn)-N for the lowest free N >= 2."""
        base = slugify_fqdn(fqdn)
        taken = set(
            self.filter(name__regex=rf"^{re.escape(base)}(-[0-9]+)?$").values_list(
                "name", flat=True
            )
        )
        if base not in taken:
            return base
        counter = 2
        while f"{base}-{counter}" in taken:
            counter += 1
        return f"{base}-{counter}"

    def create_from_fqdn(self, fqdn: str, worker_type: str, **fields: Any) -> Worker:
        """Create a worker named after `fqdn` (callers hold a lock or retry on conflict)."""
        return self.create(
            name=self.unique_name(fqdn),
            worker_type=worker_type,
            registered_at=timezone.now(),
            **fields,
        )

    def create_with_activation_token(self, fqdn: str, worker_type: str) -> tuple[Worker, str]:
        """
        Pre-create a worker and return it with the key of its activation token.

        The token is enabled and expires after ACTIVATION_TOKEN_LIFETIME: the worker sends it
        once, on registration, to receive its own token already enabled.
        """
        activation_token, key = Token.objects.create_with_key(
            enabled=True,
            expire_at=timezone.now() + ACTIVATION_TOKEN_LIFETIME,
            comment=f"Activation token for {fqdn}",
        )
        worker = self.create_from_fqdn(fqdn, worker_type, activation_token=activation_token)
        return worker, key


class Worker(models.Model):
    """A machine or process that runs tasks."""

    name = models.SlugField(max_length=255, unique=True)
    worker_type = models.CharField(
        max_length=16, choices=WorkerType.choices, default=WorkerType.EXTERNAL
    )
    registered_at = models.DateTimeField(default=timezone.now)
    connected_at = models.DateTimeField(null=True, blank=True)
    instance_created_at = models.DateTimeField(null=True, blank=True)
    token = models.OneToOneField(
        Token, null=True, blank=True, on_delete=models.PROTECT, related_name="worker"
    )
    activation_token = models.OneToOneField(
        Token,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="activating_worker",
    )
    static_metadata = models.JSONField(default=dict, blank=True)
    dynamic_metadata = models.JSONField(default=dict, blank=True)
    dynamic_metadata_updated_at = models.DateTimeField(null=True, blank=True)
    concurrency = models.PositiveIntegerField(default=1)
    #: The dynamic pool this worker belongs to (its instances come and go; the row stays).
    worker_pool = models.ForeignKey(
        "db.WorkerPool",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="workers",
    )
    #: The provider's view of the current instance (`instance_id` and similar).
    worker_pool_data = models.JSONField(default=dict, blank=True)
    #: Set: it takes no new work and is terminated once idle (pool workers only).
    draining_at = models.DateTimeField(null=True, blank=True)
    #: Set: it takes no more than this many work requests per instance (ephemeral pools: 1).
    max_work_requests = models.PositiveIntegerField(null=True, blank=True)

    objects = WorkerManager()

    class Meta:
        indexes = [
            models.Index(
                fields=["connected_at"],
                name="db_worker_connected",
                condition=models.Q(connected_at__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return self.name

    def metadata(self) -> dict[str, Any]:
        """Effective metadata: dynamic metadata overridden by the admin-set static metadata."""
        return {**self.dynamic_metadata, **self.static_metadata}

    def is_enabled(self) -> bool:
        return self.token is not None and self.token.enabled

    def renew_lease(self) -> None:
        """
        Record that the worker is alive now: it keeps its running work requests.

        The lease lives on the worker's token (`last_seen_at`), which every API call from the
        worker renews too; see `debusine.server.scheduler.leases`.
        """
        if self.token_id is not None:
            Token.objects.filter(pk=self.token_id).update(last_seen_at=timezone.now())

    def mark_connected(self) -> None:
        """Its websocket is open: it can be given work."""
        self.connected_at = timezone.now()
        self.save(update_fields=["connected_at"])
        self.renew_lease()

    def mark_disconnected(self) -> None:
        """
        Its websocket closed: it gets no new work, and its lease runs out after the grace
        period unless it comes back.
        """
        self.connected_at = None
        self.save(update_fields=["connected_at"])
        self.renew_lease()

    def set_dynamic_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the worker-reported metadata wholesale."""
        self.dynamic_metadata = metadata
        self.dynamic_metadata_updated_at = timezone.now()
        self.save(update_fields=["dynamic_metadata", "dynamic_metadata_updated_at"])

    def set_static_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the admin-set metadata."""
        self.static_metadata = metadata
        self.save(update_fields=["static_metadata"])

    def enable(self) -> None:
        """Let the worker in: its token becomes usable (it connects on its next retry)."""
        if self.token is None:
            raise ValidationError(f"worker {self.name} has not registered yet: it has no token")
        self.token.enable()

    def disable(self) -> None:
        """Shut the worker out: disable its tokens (see `transitions.worker_disabled`)."""
        for token in (self.token, self.activation_token):
            if token is not None:
                token.disable()
