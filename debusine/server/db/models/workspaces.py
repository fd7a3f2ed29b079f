"""Workspaces: own artifacts, collections and work requests; roles decide who sees them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models import Q
from django.db.models.expressions import RawSQL

from debusine.server.db.models.scopes import Scope, ScopeRole, ScopeRoles, name_validator

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from debusine.server.db.models.auth import User


class WorkspaceRoles(models.TextChoices):
    """Roles on a workspace, strongest first. Each implies the ones after it."""

    OWNER = "owner", "Owner"
    CONTRIBUTOR = "contributor", "Contributor"
    VIEWER = "viewer", "Viewer"


#: Roles that imply each role (a role implies itself).
IMPLIED_BY: dict[str, list[str]] = {
    WorkspaceRoles.OWNER: [WorkspaceRoles.OWNER],
    WorkspaceRoles.CONTRIBUTOR: [WorkspaceRoles.OWNER, WorkspaceRoles.CONTRIBUTOR],
    WorkspaceRoles.VIEWER: [
        WorkspaceRoles.OWNER,
        WorkspaceRoles.CONTRIBUTOR,
        WorkspaceRoles.VIEWER,
    ],
}


def _role_filter(user: User, role: str) -> Q:
    """
    Workspaces where `user` holds `role` or stronger, or owns the scope.

    Every permission-filtered API request builds this filter. As one raw subquery it costs
    almost nothing to compile; the equivalent ORM `Exists()` through group memberships took
    about 3 ms of Python per request.
    """
    from debusine.server.db.models.auth import GroupMembership

    sql = f"""
        SELECT role.resource_id FROM {WorkspaceRole._meta.db_table} AS role
        JOIN {GroupMembership._meta.db_table} AS member ON member.group_id = role.group_id
        WHERE member.user_id = %s AND role.role = ANY(%s)
        UNION
        SELECT workspace.id FROM {Workspace._meta.db_table} AS workspace
        JOIN {ScopeRole._meta.db_table} AS owner ON owner.resource_id = workspace.scope_id
        JOIN {GroupMembership._meta.db_table} AS member ON member.group_id = owner.group_id
        WHERE member.user_id = %s AND owner.role = %s
    """  # noqa: S608 (table names from model metadata; values are parameters)
    parameters = (user.pk, list(IMPLIED_BY[role]), user.pk, ScopeRoles.OWNER)
    return Q(pk__in=RawSQL(sql, parameters))  # noqa: S611 (no user input in the SQL text)


class WorkspaceQuerySet(models.QuerySet["Workspace"]):
    """Queries over workspaces, including permission filters."""

    def in_scope(self, scope: Scope) -> WorkspaceQuerySet:
        return self.filter(scope=scope)

    def with_role(self, user: User | AnonymousUser, role: str) -> WorkspaceQuerySet:
        """Workspaces where `user` holds `role` (or a stronger one)."""
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(_role_filter(user, role))

    def with_permissions(self, user: User | AnonymousUser) -> WorkspaceQuerySet:
        """
        Annotate `user_can_display` and `user_can_contribute` (create artifacts and work
        requests), so that fetching a workspace and checking both is one query.
        """
        if not user.is_authenticated:
            return self.annotate(
                user_can_display=models.F("public"),
                user_can_contribute=models.Value(False),
            )
        if user.is_superuser:
            return self.annotate(
                user_can_display=models.Value(True), user_can_contribute=models.Value(True)
            )
        viewer = _role_filter(user, WorkspaceRoles.VIEWER)
        contributor = _role_filter(user, WorkspaceRoles.CONTRIBUTOR)
        return self.annotate(
            user_can_display=models.ExpressionWrapper(
                Q(public=True) | viewer, output_field=models.BooleanField()
            ),
            user_can_contribute=models.ExpressionWrapper(
                contributor, output_field=models.BooleanField()
            ),
        )

    def can_display(self, user: User | AnonymousUser) -> WorkspaceQuerySet:
        """Workspaces `user` can see: public ones and those they hold any role on."""
        if not user.is_authenticated:
            return self.filter(public=True)
        if user.is_superuser:
            return self
        viewer = _role_filter(user, WorkspaceRoles.VIEWER)
        return self.filter(Q(public=True) | viewer)


class Workspace(models.Model):
    """A container of artifacts, collections and work requests inside a scope."""

    scope = models.ForeignKey(Scope, on_delete=models.PROTECT, related_name="workspaces")
    name = models.CharField(max_length=255, validators=[name_validator])
    public = models.BooleanField(default=False)
    default_expiration_delay = models.DurationField(
        default=timedelta(0),
        help_text="How long artifacts and work requests are kept by default (0: forever)",
    )
    expiration_delay = models.DurationField(
        null=True,
        blank=True,
        help_text="Delete the workspace this long after its last activity (experiments)",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    inherits = models.ManyToManyField(
        "self",
        through="db.WorkspaceChain",
        through_fields=("child", "parent"),
        symmetrical=False,
        related_name="inherited_by",
    )

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "name"], name="db_workspace_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.scope.name}/{self.name}"

    def expiry(self, created_at: datetime, expiration_delay: timedelta | None) -> datetime | None:
        """
        When an artifact or work request of this workspace expires (None: never).

        Its own `expiration_delay` wins; None falls back to the workspace's default, and a
        zero delay keeps it forever.
        """
        delay = self.default_expiration_delay if expiration_delay is None else expiration_delay
        if not delay:
            return None
        return created_at + delay

    def _has_role(self, user: User | AnonymousUser, role: str) -> bool:
        return Workspace.objects.filter(pk=self.pk).with_role(user, role).exists()

    def can_display(self, user: User | AnonymousUser) -> bool:
        """Whether `user` may see this workspace and its contents."""
        return self.public or self._has_role(user, WorkspaceRoles.VIEWER)

    def can_create_artifacts(self, user: User | AnonymousUser) -> bool:
        """Whether `user` may add artifacts (contributors and owners)."""
        return self._has_role(user, WorkspaceRoles.CONTRIBUTOR)

    def can_create_work_requests(self, user: User | AnonymousUser) -> bool:
        """Whether `user` may create work requests (contributors and owners)."""
        return self._has_role(user, WorkspaceRoles.CONTRIBUTOR)

    def can_configure(self, user: User | AnonymousUser) -> bool:
        """Whether `user` may change the workspace's settings (owners)."""
        return self._has_role(user, WorkspaceRoles.OWNER)

    def grant_role(self, group: Any, role: str) -> WorkspaceRole:
        """Grant `role` to `group`; granting it twice is harmless."""
        grant, _ = WorkspaceRole.objects.get_or_create(resource=self, group=group, role=role)
        return grant

    def revoke_role(self, group: Any, role: str) -> bool:
        """Revoke `role` from `group`; return whether it was granted."""
        deleted, _ = WorkspaceRole.objects.filter(resource=self, group=group, role=role).delete()
        return deleted > 0

    def inheritance_chain(self) -> list[Workspace]:
        """Parents in lookup order (direct parents only; lookups recurse through them)."""
        return [
            link.parent
            for link in self.chain_parents.select_related("parent__scope").order_by("order")
        ]


class WorkspaceChain(models.Model):
    """One ordered parent in a workspace's inheritance chain."""

    child = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="chain_parents")
    parent = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="chain_children")
    order = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["child", "parent"], name="db_workspacechain_unique"),
            models.UniqueConstraint(
                fields=["child", "order"], name="db_workspacechain_unique_order"
            ),
            models.CheckConstraint(
                condition=~Q(child=models.F("parent")), name="db_workspacechain_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.child} inherits {self.parent} (#{self.order})"


class WorkspaceRole(models.Model):
    """A role on a workspace, granted to a group."""

    resource = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="roles")
    group = models.ForeignKey("db.Group", on_delete=models.CASCADE, related_name="workspace_roles")
    role = models.CharField(max_length=16, choices=WorkspaceRoles.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["resource", "group", "role"], name="db_workspacerole_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.group}: {self.role} of {self.resource}"
