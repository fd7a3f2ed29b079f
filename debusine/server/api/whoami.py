"""API views that belong to no resource: `GET /api/1.0/whoami/` (who the server thinks you are)."""

from __future__ import annotations

from django.urls import URLPattern, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from debusine.server.api.auth import request_worker

ANONYMOUS_NAME = "<anonymous>"


class WhoAmIView(APIView):
    """
    `GET`: `{"user": name, "auth": bool, "worker_token": bool}`, for any caller.

    `auth` says whether the request was authenticated at all (a usable user or worker token);
    a worker token authenticates a worker, not a user, so its `user` is `<anonymous>`.
    """

    permission_classes = []

    def get(self, request: Request) -> Response:
        user = request.user
        is_user = bool(user and user.is_authenticated)
        is_worker = request_worker(request) is not None
        return Response(
            {
                "user": user.get_username() if is_user else ANONYMOUS_NAME,
                "auth": is_user or is_worker,
                "worker_token": is_worker,
            }
        )


urlpatterns: list[URLPattern] = [
    path("whoami/", WhoAmIView.as_view(), name="api-whoami"),
]
