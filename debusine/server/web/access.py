"""
Who may see and do what on web pages: the API's rules, applied to session users.

A workspace the user cannot display is a 404, exactly as on the API: outsiders cannot tell a
private workspace from a missing one.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.http import Http404, HttpRequest

from debusine.server.api.work_requests import can_manage
from debusine.server.db.models import User, WorkRequest, Workspace

__all__ = ["can_manage", "may_manage", "request_user", "visible_workspace"]


def request_user(request: HttpRequest) -> User | AnonymousUser:
    """The signed-in user of the session, or an anonymous one."""
    user = getattr(request, "user", None)
    return user if isinstance(user, User) else AnonymousUser()


def visible_workspace(request: HttpRequest, scope_name: str, workspace_name: str) -> Workspace:
    """
    The workspace named by the URL with the user's permissions on it (`user_can_display`,
    `user_can_contribute`), in one query; a 404 when it is missing or hidden.
    """
    workspace = (
        Workspace.objects.select_related("scope")
        .filter(scope__name=scope_name, name=workspace_name)
        .with_permissions(request_user(request))
        .first()
    )
    if workspace is None or not workspace.user_can_display:  # type: ignore[attr-defined]
        raise Http404(f"No workspace {workspace_name!r} in scope {scope_name!r}")
    return workspace


def may_manage(request: HttpRequest, work_request: WorkRequest) -> bool:
    """Whether the session's user may retry or abort `work_request` (the API's rule)."""
    user = request_user(request)
    return isinstance(user, User) and can_manage(user, work_request)
