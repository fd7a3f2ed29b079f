"""
`Token: <key>` authentication for the API, and the permission classes built on it.

A disabled, expired or unknown token makes the request anonymous. A usable token belongs to
a user (request.user is that user) or to a worker (request.user stays anonymous, so a worker
token can never act as a user; `request_worker()` returns the worker, as resolved by
`debusine.server.work_requests.worker_tokens`, the one resolver of worker tokens).
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
from debusine.server.work_requests.worker_tokens import WorkerCaller, resolve_worker_token

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


def has_worker(token: Token) -> bool:
    """Whether a worker uses this token (loaded with it by `Token.objects.get_by_key`)."""
    try:
        token.worker  # noqa: B018
    except Worker.DoesNotExist:
        return False
    return True


class ConflictingTokenError(Exception):
    """A token linked to a user and to a worker: refused (403) wherever it is sent."""


def authenticate_token(
    request: HttpRequest,
) -> tuple[User | AnonymousUser, Token | WorkerCaller] | None:
    """
    What the request's `Token` header authenticates, for the API and the download views alike.

    Records the token as seen, usable or not. Returns None when the request is anonymous (no
    token, or an unknown, disabled or expired one, or one of an inactive user); the token's user
    and the token for a user token; AnonymousUser and the worker for a worker token (a token of
    neither stays a Token). Raises ConflictingTokenError for a token of a user and a worker.
    """
    token = token_from_request(request)
    if token is None:
        return None
    touch_last_seen(token)
    if not token.is_usable():
        return None
    if token.user is None:
        worker = resolve_worker_token(request.META.get(TOKEN_HEADER))
        return AnonymousUser(), (worker if worker is not None else token)
    if has_worker(token):
        raise ConflictingTokenError("A token cannot belong to a user and a worker")
    if not token.user.is_active:
        return None
    return token.user, token


class TokenAuthentication(authentication.BaseAuthentication):
    """DRF authentication from the `Token` header (case-insensitive by HTTP)."""

    def authenticate(
        self, request: Request
    ) -> tuple[User | AnonymousUser, Token | WorkerCaller] | None:
        try:
            return authenticate_token(request._request)
        except ConflictingTokenError as error:
            raise exceptions.PermissionDenied(str(error)) from None

    def authenticate_header(self, request: Request) -> str:
        # Without this DRF turns 401 into 403; we keep its 403 for missing credentials.
        return ""


def request_worker(request: Request) -> WorkerCaller | None:
    """The worker that authenticated `request` with its (enabled) token, if any."""
    auth = request.auth
    return auth if isinstance(auth, WorkerCaller) else None


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
