"""Scopes: the top level of multi-tenancy, and the roles granted on them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.validators import RegexValidator
from django.db import models

if TYPE_CHECKING:
    from debusine.server.db.models.auth import User

#: Names of scopes, workspaces and groups appear in URLs: keep them URL-safe.
name_validator = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9+._-]*$",
    "must start with a letter and contain only letters, digits and + . _ -",
)


class ScopeRoles(models.TextChoices):
    """Roles that can be granted on a scope."""

    OWNER = "owner", "Owner"


class ScopeQuerySet(models.QuerySet["Scope"]):
    """Queries over scopes."""

    def owned_by(self, user: User) -> ScopeQuerySet:
        """Scopes on which `user` holds the owner role through one of their groups."""
        return self.filter(
            roles__role=ScopeRoles.OWNER, roles__group__memberships__user=user
        ).distinct()


class Scope(models.Model):
    """A tenant: it owns workspaces and groups, and has its own file store policies."""

    name = models.CharField(max_length=255, unique=True, validators=[name_validator])
    label = models.CharField(max_length=255, blank=True, default="")
    icon = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    file_stores = models.ManyToManyField(
        "db.FileStore", through="db.FileStoreInScope", related_name="scopes"
    )

    objects = ScopeQuerySet.as_manager()

    def __str__(self) -> str:
        return self.name

    def is_owned_by(self, user: User) -> bool:
        """Whether `user` is an owner of this scope (superusers own everything)."""
        if not user.is_authenticated:
            return False
        if user.is_superuser:
            return True
        return self.roles.filter(role=ScopeRoles.OWNER, group__memberships__user=user).exists()

    def grant_role(self, group: Any, role: str) -> ScopeRole:
        """Grant `role` (a ScopeRoles value) to `group` of this scope; twice is harmless."""
        grant, _ = ScopeRole.objects.get_or_create(resource=self, group=group, role=role)
        return grant


class ScopeRole(models.Model):
    """A role on a scope, granted to a group."""

    resource = models.ForeignKey(Scope, on_delete=models.CASCADE, related_name="roles")
    group = models.ForeignKey("db.Group", on_delete=models.CASCADE, related_name="scope_roles")
    role = models.CharField(max_length=16, choices=ScopeRoles.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["resource", "group", "role"], name="db_scoperole_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.group}: {self.role} of {self.resource}"
