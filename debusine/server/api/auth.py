"""
`Token: <key>` authentication for the API, and the permission classes built on it.

A request without a `Token` header is anonymous. A request whose token is not valid is refused
with a problem saying why, never served as anonymous (a misconfigured client must learn that
its token is wrong): 401 for an unknown or expired token, 403 for a disabled one, the token of
an inactive user, or an activation token used for anything but registering its worker. Refusals
are counted per client address (`token_failures`): past the limit they become 429.

A valid token belongs to a user (request.user is that user) or to a worker (request.user stays
anonymous, so a worker token can never act as a user; `request_worker()` returns the worker,
as resolved by `debusine.server.work_requests.worker_tokens`, the one resolver of worker
tokens).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db import DEFAULT_DB_ALIAS
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from debusine.server.api import token_failures
from debusine.server.api.problem import ProblemError
from debusine.server.db.models import Token, User, Worker
from debusine.server.db.models.auth import LAST_SEEN_RESOLUTION
from debusine.server.replicas import use_primary
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
        # Bookkeeping, not the caller's write: straight to the primary, without ending the
        # request's replica reads or pinning the caller (debusine.server.replicas).
        Token.objects.using(DEFAULT_DB_ALIAS).filter(pk=token.pk).update(last_seen_at=now)
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


class TokenRefusedError(ProblemError):
    """The request presented a token that is not valid: a 401 or 403 problem saying why."""

    # Raised before the view runs: the token's last_seen_at (recorded even for a refused
    # token, as Debusine does) is all the request wrote, and it stays.
    rolls_back = False


def token_refusal(token: Token | None) -> TokenRefusedError:
    """Why `token` (None: no token has the key that was sent) cannot authenticate a request."""
    if token is None:
        return TokenRefusedError(
            "Invalid token",
            "The token in the Token header is not known to this server.",
            status_code=401,
            headers={"WWW-Authenticate": "Token"},
        )
    if token.is_expired():
        return TokenRefusedError(
            "Token expired",
            f"The token in the Token header expired at {token.expire_at:%Y-%m-%dT%H:%M:%SZ}.",
            status_code=401,
            headers={"WWW-Authenticate": "Token"},
        )
    if not token.enabled:
        worker = Worker.objects.filter(token=token).values_list("name", flat=True).first()
        hint = (
            f"an administrator enables it with `debusine-admin worker enable {worker}`"
            if worker is not None
            else "ask an administrator to enable it"
        )
        return TokenRefusedError(
            "Token disabled",
            f"The token in the Token header is disabled: {hint}.",
            status_code=403,
        )
    if token.user is not None and not token.user.is_active:
        return TokenRefusedError(
            "Token disabled",
            f"The account of user {token.user.username} is inactive.",
            status_code=403,
        )
    return TokenRefusedError(
        "Activation token",
        "An activation token can only register its worker (POST /api/1.0/worker/register/).",
        status_code=403,
    )


def refuse_token(request: HttpRequest, token: Token | None) -> TokenRefusedError:
    """
    The refusal of `request`'s token, counted against its address: past the limit it is a
    429 with Retry-After instead of the reason.
    """
    retry_after = token_failures.record_failure(request)
    if retry_after is not None:
        return TokenRefusedError(
            "Too many invalid tokens",
            token_failures.too_many_reason(retry_after),
            status_code=429,
            headers={"Retry-After": str(retry_after)},
        )
    return token_refusal(token)


def authenticate_token(
    request: HttpRequest,
) -> tuple[User | AnonymousUser, Token | WorkerCaller] | None:
    """
    What the request's `Token` header authenticates, for the API and the download views alike.

    Records the token as seen, usable or not. Returns None when the request has no token; the
    token's user and the token for a user token; AnonymousUser and the worker for a worker token
    (an enabled token of neither, other than an activation token, stays a Token). Raises
    TokenRefusedError for a token that is not valid (see `token_refusal`) and
    ConflictingTokenError for a token of a user and a worker.
    """
    key = (request.META.get(TOKEN_HEADER) or "").strip()
    if not key:
        return None
    token = Token.objects.get_by_key(key)
    if token is None:
        raise refuse_token(request, None)
    touch_last_seen(token)
    if not token.is_usable():
        raise refuse_token(request, token)
    if token.user is None:
        if hasattr(token, "activating_worker"):
            raise refuse_token(request, token)
        worker = resolve_worker_token(key)
        # Workers act on what the scheduler just wrote: they never read a replica.
        use_primary()
        return AnonymousUser(), (worker if worker is not None else token)
    if has_worker(token):
        raise ConflictingTokenError("A token cannot belong to a user and a worker")
    if not token.user.is_active:
        raise refuse_token(request, token)
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
