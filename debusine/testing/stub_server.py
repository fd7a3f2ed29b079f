"""
A scripted stand-in for the server's worker endpoints (aiohttp.web, loopback only).

It answers exactly the calls a worker makes (protocol.md §2.1, §2.3, §3.1), records each one
as an event, and lets a test push websocket frames. The daemon's unit tests use it to check the
wire behaviour in detail, including failures a real server is hard to provoke (a completion
answered 500, a non-empty completion body); tests/integration/ runs the daemon against the
real server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

WORK_REQUEST_TEMPLATE: dict[str, Any] = {
    "url": "/debusine/System/work-request/1/",
    "created_at": "2025-01-01T00:00:00Z",
    "created_by": 1,
    "aborted_by": None,
    "started_at": None,
    "completed_at": None,
    "duration": None,
    "worker": 1,
    "task_type": "Worker",
    "dynamic_task_data": {},
    "priority_base": 0,
    "priority_adjustment": 0,
    "workflow_data": {},
    "event_reactions": {},
    "status": "pending",
    "result": "",
    "artifacts": [],
    "scope": "debusine",
    "workspace": "System",
}


def work_request(
    id: int, task_name: str, task_data: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """A WorkRequest object as get-next-for-worker returns it."""
    return {
        **WORK_REQUEST_TEMPLATE,
        "id": id,
        "task_name": task_name,
        "task_data": task_data,
        **fields,
    }


@dataclass
class StubServer:
    """The scripted server: set the attributes, then read `events`."""

    register_status: int = 201
    #: Tokens whose websocket is rejected with TOKEN_DISABLED.
    disabled_tokens: set[str] = field(default_factory=set)
    #: Work requests handed out by get-next, in order (then 204).
    work_requests: list[dict[str, Any]] = field(default_factory=list)
    #: Status (and body) of successive completion calls; 200 with an empty body once empty.
    completion_answers: list[tuple[int, bytes]] = field(default_factory=list)
    #: Announce the next queued work request as soon as one is completed (for benchmarks).
    announce_after_completion: bool = False
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    websockets: list[web.WebSocketResponse] = field(default_factory=list)
    #: path -> bytes received, per artifact file.
    uploads: dict[str, bytes] = field(default_factory=dict)
    _artifact_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/1.0/worker/register/", self.register)
        app.router.add_put("/api/1.0/worker/dynamic-metadata/", self.dynamic_metadata)
        app.router.add_get("/api/1.0/work-request/get-next-for-worker/", self.get_next)
        app.router.add_put("/api/1.0/work-request/{id}/completed/", self.completed)
        app.router.add_post("/api/1.0/artifact/", self.create_artifact)
        app.router.add_put("/api/1.0/artifact/{id}/files/{path:.+}/", self.upload)
        app.router.add_get("/api/ws/1.0/worker/connect/", self.websocket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for websocket in self.websockets:
            await websocket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api"

    async def next_event(self, *kinds: str, timeout: float = 10) -> tuple[str, Any]:
        """The next event of one of `kinds` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event[0] in kinds:
                    return event

    async def send(self, frame: dict[str, Any]) -> None:
        """Send `frame` on the most recent websocket."""
        await self.websockets[-1].send_str(json.dumps(frame))

    # --- Handlers ------------------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self.events.put(("register", {"body": body, "token": request.headers.get("token")}))
        return web.Response(status=self.register_status)

    async def dynamic_metadata(self, request: web.Request) -> web.Response:
        await self.events.put(("metadata", await request.json()))
        return web.Response(status=204)

    async def get_next(self, request: web.Request) -> web.Response:
        await self.events.put(("get-next", request.headers.get("token")))
        if not self.work_requests:
            return web.Response(status=204)
        return web.json_response(self.work_requests.pop(0))

    async def completed(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self.events.put(("completed", (int(request.match_info["id"]), body)))
        status, content = self.completion_answers.pop(0) if self.completion_answers else (200, b"")
        if self.announce_after_completion and self.work_requests:
            await self.send({"type": "websocket.send", "text": "work_request_available"})
        return web.Response(status=status, body=content)

    async def create_artifact(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self.events.put(("artifact", body))
        self._artifact_files = body["files"]
        to_upload = sorted(path for path, item in body["files"].items() if item["size"] > 0)
        return web.json_response(
            {"id": 7, "files_to_upload": to_upload, "workspace": body["workspace"]}, status=201
        )

    async def upload(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        declared = self._artifact_files[path]
        start_end, size = request.headers["Content-Range"].removeprefix("bytes ").split("/")
        start = int(start_end.split("-")[0])
        received = self.uploads.get(path, b"")[:start] + await request.read()
        self.uploads[path] = received
        await self.events.put(
            ("upload", {"path": path, "content_type": request.headers.get("Content-Type")})
        )
        if len(received) < int(size):
            return web.Response(status=200, headers={"Range": f"bytes=0-{len(received)}"})
        if hashlib.sha256(received).hexdigest() != declared["checksums"]["sha256"]:
            return web.Response(status=409)
        return web.Response(status=201)

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        token = request.headers.get("token", "")
        websocket = web.WebSocketResponse()
        await websocket.prepare(request)
        if token in self.disabled_tokens:
            await self.events.put(("rejected", token))
            await websocket.send_str(
                json.dumps(
                    {
                        "type": "connection_rejected",
                        "reason": "token disabled",
                        "reason_code": "TOKEN_DISABLED",
                    }
                )
            )
            await websocket.close()
            return websocket
        self.websockets.append(websocket)
        await websocket.send_str(json.dumps({"type": "websocket.send", "text": "connected"}))
        await websocket.send_str(
            json.dumps({"type": "websocket.send", "text": "request_dynamic_metadata"})
        )
        await self.events.put(("connected", token))
        async for _message in websocket:
            pass  # the worker sends no application messages
        await self.events.put(("disconnected", token))
        return websocket
