"""
The `debusine` command against a server that answers as Debusine 0.11 does: no `url` in the
WorkRequest and Artifact objects, no `scope`, none of our additions, and keys we do not know.
The server is a few canned JSON answers on a loopback HTTP server; the command is the real
one, parsing them with the protocol's lenient models.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from debusine.client.cli import main

WORK_REQUEST = {
    "id": 5,
    "created_at": "2025-03-01T10:00:00Z",
    "started_at": "2025-03-01T10:00:01Z",
    "completed_at": "2025-03-01T10:00:03Z",
    "duration": 2,
    "status": "completed",
    "result": "success",
    "worker": 2,
    "task_type": "Worker",
    "task_name": "noop",
    "task_data": {"result": True},
    "dynamic_task_data": None,
    "priority_base": 0,
    "priority_adjustment": 0,
    "artifacts": [3],
    "workspace": "System",
    "future_field": {"ignored": True},
}


def artifact(base_url: str) -> dict[str, Any]:
    return {
        "id": 3,
        "workspace": "System",
        "category": "debusine:work-request-debug-logs",
        "created_at": "2025-03-01T10:00:03Z",
        "data": {},
        "download_tar_gz_url": f"{base_url}/debusine/System/artifact/3/download/?archive=tar.gz",
        "files_to_upload": [],
        "expire_at": None,
        "files": {},
    }


class OldServer(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: Any) -> None:
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def do_GET(self) -> None:
        base_url = f"http://{self.headers['Host']}"
        if self.path == "/api/1.0/work-request/5/":
            self._answer(200, WORK_REQUEST)
        elif self.path == "/api/1.0/artifact/3/":
            self._answer(200, artifact(base_url))
        else:
            self._answer(404, {})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/api/1.0/work-request/":
            self._answer(200, {**WORK_REQUEST, "status": "pending", "result": ""})
        else:
            self._answer(404, {})

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OldServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api_url = f"http://127.0.0.1:{server.server_address[1]}/api"
    path = tmp_path / "config.ini"
    path.write_text(
        "[General]\ndefault-server = old\n\n"
        f"[server:old]\napi-url = {api_url}\nscope = debusine\ntoken = {'a' * 64}\n"
    )
    path.chmod(0o600)
    try:
        yield path, api_url
    finally:
        server.shutdown()
        server.server_close()


def test_show_work_request(
    config_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _api_url = config_file

    code = main(["--config-file", str(path), "show-work-request", "5"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    shown = yaml.safe_load(captured.out)
    assert shown["status"] == "completed"
    assert shown["url"] is None
    assert "future_field" not in shown
    assert [item["id"] for item in shown["artifacts"]] == [3]
    assert shown["artifacts"][0]["scope"] is None


def test_create_work_request_prints_the_api_url_when_the_server_gives_no_web_url(
    config_file: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, api_url = config_file
    data = tmp_path / "data.yaml"
    data.write_text("result: true\n")

    code = main(["--config-file", str(path), "create-work-request", "noop", "--data", str(data)])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert yaml.safe_load(captured.out) == {
        "result": "success",
        "message": f"Work request registered: {api_url}/1.0/work-request/5/",
        "work_request_id": 5,
    }
