"""Identity: users, groups and their memberships, and API tokens (stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.db.models import Q
from django.utils import timezone

from debusine.server.db.models.scopes import Scope, name_validator


class User(AbstractUser):
    """A person (or the `_system` user) who can own tokens and belong to groups."""

    is_system = models.BooleanField(
        default=False, help_text="Internal user that acts for the server itself"
    )

    objects: UserManager[User] = UserManager()  # type: ignore[assignment,misc]

    def groups_in_scope(self, scope: Scope) -> models.QuerySet[Group]:
        """The groups of `scope` this user belongs to."""
        return Group.objects.filter(scope=scope, memberships__user=self)


class GroupRoles(models.TextChoices):
    """Roles of a user inside a group."""

    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


class Group(models.Model):
    """A set of users in one scope. Every role is granted to groups, never to users."""

    name = models.CharField(max_length=255, validators=[name_validator])
    scope = models.ForeignKey(Scope, on_delete=models.CASCADE, related_name="groups")
    ephemeral = models.BooleanField(
        default=False, help_text="Deleted by delete_expired once no role refers to it"
    )
    users = models.ManyToManyField(
        User, through="db.GroupMembership", related_name="debusine_groups"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "name"], name="db_group_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.scope.name}/{self.name}"

    def set_members(self, users: list[User]) -> None:
        """Make `users` the exact membership of the group, keeping existing roles."""
        wanted = {user.pk for user in users}
        self.memberships.exclude(user_id__in=wanted).delete()
        present = set(self.memberships.values_list("user_id", flat=True))
        GroupMembership.objects.bulk_create(
            GroupMembership(group=self, user_id=pk) for pk in sorted(wanted - present)
        )

    def add_members(self, users: list[User]) -> None:
        """Add `users` as members; those already in the group keep their role."""
        GroupMembership.objects.bulk_create(
            [GroupMembership(group=self, user=user) for user in users], ignore_conflicts=True
        )

    def remove_members(self, users: list[User]) -> None:
        """Remove `users` from the group; users not in it are ignored."""
        self.memberships.filter(user__in=users).delete()

    def is_admin(self, user: User) -> bool:
        """Whether `user` may manage this group (group admin or scope owner)."""
        if self.memberships.filter(user=user, role=GroupRoles.ADMIN).exists():
            return True
        return self.scope.is_owned_by(user)


class GroupMembership(models.Model):
    """A user's membership of a group."""

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="group_memberships")
    role = models.CharField(max_length=16, choices=GroupRoles.choices, default=GroupRoles.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "user"], name="db_groupmembership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user.username} in {self.group} ({self.role})"


#: A token's `last_seen_at` is written at most this often by API calls: it is a hint for
#: humans, expiry and workers' leases (which last far longer), and a write on every request
#: would be the most expensive part of most requests.
LAST_SEEN_RESOLUTION = timedelta(seconds=30)


def hash_token_key(key: str) -> str:
    """Return the hex SHA-256 under which a token key is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def generate_token_key() -> str:
    """Return a new random token key: 64 lowercase hex characters."""
    return secrets.token_hex(32)


class TokenQuerySet(models.QuerySet["Token"]):
    """Queries over tokens."""

    def usable(self, at: datetime | None = None) -> TokenQuerySet:
        """Tokens that are enabled and not expired at `at` (default: now)."""
        at = at or timezone.now()
        return self.filter(enabled=True).filter(Q(expire_at__isnull=True) | Q(expire_at__gt=at))

    def get_by_key(self, key: str) -> Token | None:
        """Return the token whose key is `key`, usable or not, or None."""
        return (
            self.select_related("user", "worker", "activating_worker")
            .filter(hash=hash_token_key(key))
            .first()
        )


class TokenManager(models.Manager["Token"]):
    """Creates tokens and returns their one-time visible key."""

    def get_queryset(self) -> TokenQuerySet:
        return TokenQuerySet(self.model, using=self._db)

    def usable(self, at: datetime | None = None) -> TokenQuerySet:
        return self.get_queryset().usable(at)

    def get_by_key(self, key: str) -> Token | None:
        return self.get_queryset().get_by_key(key)

    def create_with_key(self, key: str | None = None, **fields: Any) -> tuple[Token, str]:
        """Create a token and return it with its key (the key is not stored)."""
        key = key or generate_token_key()
        token = self.create(hash=hash_token_key(key), **fields)
        return token, key


class Token(models.Model):
    """
    An API credential. Only the SHA-256 of the key is stored.

    A token belongs to a user (user token), to a worker (`worker.token`), or is the one-shot
    activation token of a pre-created worker (`worker.activation_token`).
    """

    hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.CASCADE, related_name="tokens"
    )
    comment = models.CharField(max_length=100, blank=True, default="")
    enabled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expire_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    objects = TokenManager()

    def __str__(self) -> str:
        owner = self.user.username if self.user else "no user"
        return f"token {self.hash[:12]}… ({owner})"

    def is_expired(self, at: datetime | None = None) -> bool:
        """Whether the token has expired at `at` (default: now)."""
        return self.expire_at is not None and self.expire_at <= (at or timezone.now())

    def is_usable(self) -> bool:
        """Whether a request authenticated with this token is authenticated at all."""
        return self.enabled and not self.is_expired()

    def enable(self) -> None:
        """Enable the token."""
        self.enabled = True
        self.save(update_fields=["enabled"])

    def disable(self) -> None:
        """Disable the token: requests using it become anonymous."""
        self.enabled = False
        self.save(update_fields=["enabled"])
