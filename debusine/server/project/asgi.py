"""
ASGI entry point, served by gunicorn with uvicorn workers: Django for HTTP, Channels
consumers for the websockets under `/api/ws/1.0/`.
"""

import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import django
from django.core.handlers.asgi import ASGIHandler

from debusine.server.project.instance import SERVING_ASGI_VARIABLE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")
# Before the settings load: this process serves requests, so it pools database connections.
os.environ[SERVING_ASGI_VARIABLE] = "1"

django.setup(set_prefix=False)


class DebusineASGIHandler(ASGIHandler):
    """Django's handler, sending response bodies in pieces of 4 MiB rather than 64 KiB."""

    chunk_size = 4 * 1024 * 1024


django_application = DebusineASGIHandler()

# Imported once Django is set up.
from debusine.server.api.completion_websocket import CompletionConsumer  # noqa: E402
from debusine.server.api.streamed_body import streamed_body_application  # noqa: E402
from debusine.server.api.worker_websocket import WorkerConsumer  # noqa: E402

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

#: Django, with file upload bodies streamed to the view rather than spooled first.
http_application = streamed_body_application(django_application)

#: Websocket routes. Workers join `api-url` and `/ws/1.0/...` without stripping a trailing `/`
#: of the api-url, so repeated slashes are collapsed before matching.
WEBSOCKET_ROUTES: list[tuple[re.Pattern[str], ASGIApp]] = [
    (re.compile(r"^/api/ws/1\.0/worker/connect/?$"), WorkerConsumer.as_asgi()),
    (re.compile(r"^/api/ws/1\.0/work-request/on-completed/?$"), CompletionConsumer.as_asgi()),
]


async def websocket_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Dispatch a websocket to its consumer; refuse unknown paths before accepting them."""
    path = re.sub("/{2,}", "/", scope.get("path", ""))
    for pattern, consumer in WEBSOCKET_ROUTES:
        if pattern.match(path):
            await consumer(scope, receive, send)
            return
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 4404})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await websocket_application(scope, receive, send)
    else:
        await http_application(scope, receive, send)
