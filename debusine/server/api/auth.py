"""
`Token: <key>` authentication for the API, and the permission classes built on it.

A disabled, expired or unknown token makes the request anonymous. A usable token belongs to
a user (request.user is that user) or to a worker (request.user stays anonymous, so a worker
token can never act as a user; `request_worker()` returns the worker).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from debusine.server.db.models import Token, User, Worker
from debusine.server.db.models.auth import LAST_SEEN_RESOLUTION

TOKEN_HEADER = "HTTP_TOKEN"  # noqa: S105


def token_from_request(request: HttpRequest) -> Token | None:
    """Return the Token row named by the request's `Token` header, usable or not."""
    key = request.META.get(TOKEN_HEADER)
    if not key:
        return None
    return Token.objects.get_by_key(key.strip())


def touch_last_seen(token: Token) -> None:
    """Record that the token was just used (throttled by LAST_SEEN_RESOLUTION)."""
    now = timezone.now()
    if token.last_seen_at is None or now - token.last_seen_at >= LAST_SEEN_RESOLUTION:
        Token.objects.filter(pk=token.pk).update(last_seen_at=now)
        token.last_seen_at = now


def token_worker(token: Token) -> Worker | None:
    """The worker this token authenticates, if any."""
    try:
        return token.worker
    except Worker.DoesNotExist:
        return None


class ConflictingTokenError(Exception):
    """A token linked to a user and to a worker: refused (403) wherever it is sent."""


def authenticate_token(request: HttpRequest) -> tuple[User | AnonymousUser, Token] | None:
    """
    What the request's `Token` header authenticates, for the API and the download views alike.

    Records the token as seen, usable or not. Returns None when the request is anonymous (no
    token, or an unknown, disabled or expired one, or one of an inactive user); the token's user
    for a user token; AnonymousUser for a worker token (see `token_worker()`). Raises
    ConflictingTokenError for a token of a user and a worker.
    """
    token = token_from_request(request)
    if token is None:
        return None
    touch_last_seen(token)
    if not token.is_usable():
        return None
    if token.user is None:
        return AnonymousUser(), token
    if token_worker(token) is not None:
        raise ConflictingTokenError("A token cannot belong to a user and a worker")
    if not token.user.is_active:
        return None
    return token.user, token


class TokenAuthentication(authentication.BaseAuthentication):
    """DRF authentication from the `Token` header (case-insensitive by HTTP)."""

    def authenticate(self, request: Request) -> tuple[User | AnonymousUser, Token] | None:
        try:
            return authenticate_token(request._request)
        except ConflictingTokenError as error:
            raise exceptions.PermissionDenied(str(error)) from None

    def authenticate_header(self, request: Request) -> str:
        # Without this DRF turns 401 into 403; we keep its 403 for missing credentials.
        return ""


def request_token(request: Request) -> Token | None:
    """The usable token that authenticated `request`."""
    auth = request.auth
    return auth if isinstance(auth, Token) else None


def request_worker(request: Request) -> Worker | None:
    """The worker that authenticated `request` with its (enabled) token, if any."""
    token = request_token(request)
    return token_worker(token) if token is not None else None


class IsWorker(permissions.BasePermission):
    """Only enabled worker tokens."""

    message = "This endpoint needs an enabled worker token."

    def has_permission(self, request: Request, view: Any) -> bool:
        return request_worker(request) is not None


class IsUser(permissions.BasePermission):
    """Only enabled user tokens (or an authenticated session)."""

    message = "This endpoint needs a user token."

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated)


class IsUserOrWorker(permissions.BasePermission):
    """Any enabled token."""

    message = "Authentication credentials were not provided."

    def has_permission(self, request: Request, view: Any) -> bool:
        return IsUser().has_permission(request, view) or request_worker(request) is not None
