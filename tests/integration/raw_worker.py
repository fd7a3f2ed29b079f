"""
A worker written straight from protocol.md, for tests that check the server's frames and
status codes one by one (the real daemon hides them behind its own behaviour).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import aiohttp


class RawWorker:
    """Registers, opens the worker websocket and records every frame."""

    def __init__(self, api_url: str, key: str | None = None) -> None:
        self.api_url = api_url
        self.key = key or secrets.token_hex(32)
        self.session: aiohttp.ClientSession | None = None
        self.websocket: aiohttp.ClientWebSocketResponse | None = None
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"token": self.key}

    async def __aenter__(self) -> RawWorker:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.disconnect()
        assert self.session is not None
        await self.session.close()

    async def register(self, fqdn: str, activation_token: str | None = None) -> int:
        assert self.session is not None
        headers = {"token": activation_token} if activation_token else {}
        async with self.session.post(
            f"{self.api_url}/1.0/worker/register/",
            json={"token": self.key, "fqdn": fqdn, "worker_type": "external"},
            headers=headers,
        ) as response:
            assert await response.read() == b""
            return response.status

    async def connect(self, path: str = "/ws/1.0/worker/connect/") -> None:
        assert self.session is not None
        url = self.api_url.replace("http", "ws", 1) + path
        self.websocket = await self.session.ws_connect(url, headers=self.headers, heartbeat=30)
        self.frames = asyncio.Queue()
        self.reader = asyncio.create_task(self._read(self.websocket))

    async def _read(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        async for message in websocket:
            if message.type == aiohttp.WSMsgType.TEXT:
                await self.frames.put(json.loads(message.data))
        await self.frames.put({"type": "<closed>"})

    async def disconnect(self) -> None:
        if self.websocket is not None:
            await self.websocket.close()
            self.websocket = None
        if self.reader is not None:
            await self.reader
            self.reader = None

    async def next_frame(self, timeout: float = 10) -> dict[str, Any]:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def wait_for(self, text: str, timeout: float = 10) -> dict[str, Any]:
        """Skip frames until one whose `text` (or `type`) is `text`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.next_frame(max(0.01, deadline - loop.time()))
            if text in (frame.get("text"), frame.get("type")):
                return frame

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """An API call with the worker token: (status, parsed JSON body or raw bytes)."""
        assert self.session is not None
        async with self.session.request(
            method, f"{self.api_url}/1.0/{path}", json=body, headers=self.headers
        ) as response:
            content = await response.read()
            if response.content_type.endswith("json") and content:
                return response.status, json.loads(content)
            return response.status, content

    async def send_metadata(self, metadata: dict[str, Any] | None = None) -> None:
        status, _ = await self.call(
            "PUT",
            "worker/dynamic-metadata/",
            metadata if metadata is not None else {"noop:version": 1, "sleep:version": 1},
        )
        assert status == 204
