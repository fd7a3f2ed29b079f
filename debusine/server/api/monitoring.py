"""
Monitoring endpoints: `GET /api/1.0/open-metrics/` (Prometheus) and
`GET /api/1.0/service-status/` (JSON queue and worker counts).

Both answer anyone, like Debusine's; DEBUSINE_METRICS_TOKEN, when set, protects open-metrics.
See docs/reference/metrics.md.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.views.decorators.http import require_safe
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from debusine.server.api.errors import ProblemError, plain_problem_response
from debusine.server.metrics.exposition import render
from debusine.server.metrics.service_status import service_status


def metrics_token_accepted(request: HttpRequest) -> bool:
    """Whether the request may read the metrics: no token configured, or the right one."""
    expected: str = settings.DEBUSINE_METRICS_TOKEN
    if not expected:
        return True
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), expected.encode()
    )


@require_safe
def open_metrics(request: HttpRequest) -> HttpResponse:
    """
    Every metric (docs/reference/metrics.md): OpenMetrics when `Accept` asks for
    `application/openmetrics-text`, the Prometheus text format otherwise.
    """
    if not metrics_token_accepted(request):
        response = plain_problem_response(
            ProblemError(
                "Metrics token required",
                "Send `Authorization: Bearer <DEBUSINE_METRICS_TOKEN>`",
                status_code=status.HTTP_401_UNAUTHORIZED,
            )
        )
        response["WWW-Authenticate"] = 'Bearer realm="debusine metrics"'
        return response
    body, content_type = render(request.META.get("HTTP_ACCEPT"))
    return HttpResponse(body, content_type=content_type)


class ServiceStatusView(APIView):
    """`GET`: queue and worker counts (protocol.md), for anyone."""

    permission_classes = []

    def get(self, request: Request) -> Response:
        return Response(service_status().model_dump(mode="json"))


urlpatterns: list[URLPattern] = [
    path("open-metrics/", open_metrics, name="api-open-metrics"),
    path("service-status/", ServiceStatusView.as_view(), name="api-service-status"),
]
