"""
The request latency histogram: how long the server took to answer each HTTP request, by the
name of the route it matched (`unmatched` for none) and its method.

Route names are a fixed set (the URLconf's), so the label stays bounded whatever URLs clients
send. The time covers the whole middleware chain below this one (it comes first in
MIDDLEWARE), the view and its transaction; not the websockets, which are no HTTP requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from debusine.server.metrics import events

#: `endpoint` of requests that matched no named route (a 404, a static file).
UNMATCHED = "unmatched"


class RequestLatencyMiddleware:
    """Record each request's duration in `debusine_http_request_duration_seconds`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        endpoint = match.url_name if match is not None and match.url_name else UNMATCHED
        events.request_served(endpoint, request.method or "", time.perf_counter() - started)
        return response
