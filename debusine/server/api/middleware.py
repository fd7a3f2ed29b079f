"""Choose the scope of each API request from `X-Debusine-Scope` (default scope otherwise)."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotFound
from django.utils.functional import SimpleLazyObject

from debusine.server.db.models import Scope

SCOPE_HEADER = "HTTP_X_DEBUSINE_SCOPE"


class ScopeMiddleware:
    """
    Set `request.debusine_scope` on `/api/` requests (`request.scope` is the ASGI scope).

    Workers never send the header, so requests without one use DEBUSINE_DEFAULT_SCOPE. An
    unknown scope is a plain (non-JSON) 404, as Debusine clients expect: the 0.11 client reports
    a plain 404 as "not found" but crashes on a problem there. It is the one error under /api/
    that ProblemMiddleware leaves alone (`keep_plain`).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path_info:
            # No name or path we store can hold NUL (PostgreSQL refuses it): whatever the
            # URL names does not exist, and looking it up would be a database error.
            return plain_not_found("Not found")
        if "//" in request.path_info:
            # Workers join `api-url + "/1.0/..."`: an api-url ending in "/" must still work.
            request.path_info = re.sub("/{2,}", "/", request.path_info)
            request.path = re.sub("/{2,}", "/", request.path)
        if request.path.startswith("/api/"):
            name = request.META.get(SCOPE_HEADER)
            if name is None:
                # Workers never name a scope, and their hot path needs none: look the default
                # scope up only when a view asks for it.
                request.debusine_scope = SimpleLazyObject(default_scope)  # type: ignore[attr-defined]
            else:
                scope = None if "\x00" in name else Scope.objects.filter(name=name).first()
                if scope is None:
                    return plain_not_found(f"Scope {name!r} not found")
                request.debusine_scope = scope  # type: ignore[attr-defined]
        return self.get_response(request)


def plain_not_found(text: str) -> HttpResponse:
    """A plain-text 404 that ProblemMiddleware keeps plain (see ScopeMiddleware)."""
    response = HttpResponseNotFound(text, content_type="text/plain")
    response.keep_plain = True  # type: ignore[attr-defined]
    return response


def default_scope() -> Scope:
    """DEBUSINE_DEFAULT_SCOPE, or a 404 when it does not exist."""
    scope = Scope.objects.filter(name=settings.DEBUSINE_DEFAULT_SCOPE).first()
    if scope is None:
        raise Http404(f"Scope {settings.DEBUSINE_DEFAULT_SCOPE!r} not found")
    return scope


def request_scope_name(request: HttpRequest) -> str:
    """The name of the request's scope, without looking the scope up."""
    name: str = request.META.get(SCOPE_HEADER) or settings.DEBUSINE_DEFAULT_SCOPE
    return name


def request_scope(request: HttpRequest) -> Scope:
    """The scope chosen for this request by ScopeMiddleware."""
    scope = getattr(request, "debusine_scope", None)
    if not isinstance(scope, Scope):
        raise RuntimeError("request has no scope: is ScopeMiddleware installed?")
    return scope
