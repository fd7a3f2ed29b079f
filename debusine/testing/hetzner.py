"""
A loopback HTTP server answering the Hetzner Cloud API calls the `hcloud` library makes for
the `hetzner` provider (create, list by label selector, delete servers), for tests only: the
real API cannot be reached from here. It keeps servers in memory, checks the bearer token,
and can be told to have no capacity for given server types.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_TOKEN = "hetzner-test-token"  # noqa: S105 (a test fixture)


@dataclass
class HetznerState:
    servers: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Each server's creation request, as sent.
    requests: dict[int, dict[str, Any]] = field(default_factory=dict)
    unavailable_server_types: set[str] = field(default_factory=set)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))


def _server(server_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": server_id,
        "name": body["name"],
        "status": "initializing",
        "created": "2026-12-03T00:00:00+00:00",
        "labels": body.get("labels") or {},
        "server_type": {"id": 1, "name": body["server_type"]},
        "image": {"id": 1, "name": body["image"], "type": "system"},
        "public_net": {"ipv4": None, "ipv6": None, "floating_ips": [], "firewalls": []},
        "private_net": [],
        "volumes": [],
        "protection": {"delete": False, "rebuild": False},
    }


def _action(command: str) -> dict[str, Any]:
    return {
        "id": 1,
        "command": command,
        "status": "running",
        "progress": 0,
        "started": "2026-12-03T00:00:00+00:00",
        "finished": None,
        "resources": [],
        "error": None,
    }


def _handler(state: HetznerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error(self, status: int, code: str, message: str) -> None:
            self.answer(status, {"error": {"code": code, "message": message, "details": {}}})

        def authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {API_TOKEN}":
                return True
            self.error(401, "unauthorized", "unable to authenticate")
            return False

        def do_GET(self) -> None:
            if not self.authorised():
                return
            url = urlsplit(self.path)
            if url.path != "/v1/servers":
                self.error(404, "not_found", url.path)
                return
            query = parse_qs(url.query)
            selector = query.get("label_selector", [""])[0]
            key, _, wanted = selector.partition("=")
            servers = [
                server
                for server in state.servers.values()
                if not selector or server["labels"].get(key) == wanted
            ]
            self.answer(
                200,
                {
                    "servers": servers,
                    "meta": {
                        "pagination": {
                            "page": 1,
                            "per_page": 50,
                            "previous_page": None,
                            "next_page": None,
                            "last_page": 1,
                            "total_entries": len(servers),
                        }
                    },
                },
            )

        def do_POST(self) -> None:
            if not self.authorised():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/servers":
                self.error(404, "not_found", self.path)
                return
            if body["server_type"] in state.unavailable_server_types:
                self.error(412, "resource_unavailable", "server type unavailable here")
                return
            server_id = next(state.ids)
            state.servers[server_id] = _server(server_id, body)
            state.requests[server_id] = body
            self.answer(
                201,
                {
                    "server": state.servers[server_id],
                    "action": _action("create_server"),
                    "next_actions": [],
                    "root_password": None,
                },
            )

        def do_DELETE(self) -> None:
            if not self.authorised():
                return
            server_id = int(self.path.rstrip("/").rsplit("/", 1)[-1])
            if state.servers.pop(server_id, None) is None:
                self.error(404, "not_found", f"server {server_id}")
                return
            self.answer(200, {"action": _action("delete_server")})

    return Handler


class FakeHetznerApi:
    """The server on a free loopback port, in a thread of the test process."""

    def __init__(self) -> None:
        self.state = HetznerState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.endpoint_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHetznerApi:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
