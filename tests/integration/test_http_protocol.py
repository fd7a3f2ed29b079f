"""
The wire protocol as a client sees it: plain `curl` against a real server process.

Covers the `noop` work request steps a client performs (protocol.md §6, steps 1 and 6) and the
resumable file upload of §2.3: probe, first chunk, a connection dropped mid-body, probe and
resume, completion, download (whole and ranged), and a hash mismatch. Completion of the work
request by a worker comes with the worker integration tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.integration

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Response:
    """What curl received."""

    status: int
    headers: dict[str, str]  # lower-case names; the last value wins
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def curl(
    server: LiveServer,
    method: str,
    url: str,
    *,
    json_body: object = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = "",
) -> Response:
    """
    Run `curl` once and return the response.

    `url` is absolute or relative to the server. Raw `data` goes without a Content-Type, as
    the real client's upload does. `token` defaults to the server's user token.
    """
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (`make test` installs it)")
    if url.startswith("/"):
        url = server.base_url + url
    with tempfile.TemporaryDirectory() as work:
        header_file, body_file, data_file = (Path(work) / name for name in ("h", "b", "d"))
        command = ["curl", "--silent", "--show-error", "--request", method, url]
        command += ["--dump-header", str(header_file), "--output", str(body_file)]
        command += ["--write-out", "%{http_code}", "--header", "Expect:"]
        sent_headers = {"X-Debusine-Scope": "debusine", **(headers or {})}
        if token is not None:
            sent_headers["Token"] = token or server.token
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent_headers["Content-Type"] = "application/json"
        if data is not None:
            data_file.write_bytes(data)
            command += ["--data-binary", f"@{data_file}"]
            # An empty value removes curl's default form Content-Type.
            sent_headers.setdefault("Content-Type", "")
        for name, value in sent_headers.items():
            command += ["--header", f"{name}: {value}" if value else f"{name}:"]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, f"curl failed: {result.stderr}"
        response_headers: dict[str, str] = {}
        for line in header_file.read_text(errors="replace").splitlines()[1:]:
            name, _, value = line.partition(":")
            if value:
                response_headers[name.strip().lower()] = value.strip()
        return Response(int(result.stdout), response_headers, body_file.read_bytes())


def upload_url(artifact_id: int, path: str) -> str:
    return f"/api/1.0/artifact/{artifact_id}/files/{path}/"


def put_chunk(
    server: LiveServer, artifact_id: int, path: str, content: bytes, start: int
) -> Response:
    """PUT `content[start:]` as one chunk, like the client's FileUploader."""
    end = len(content) - 1
    return curl(
        server,
        "PUT",
        upload_url(artifact_id, path),
        data=content[start:],
        headers={"Content-Range": f"bytes {start}-{end}/{len(content)}"},
    )


def probe(server: LiveServer, artifact_id: int, path: str, size: int) -> Response:
    return curl(
        server,
        "PUT",
        upload_url(artifact_id, path),
        data=b"",
        headers={"Content-Range": f"bytes */{size}"},
    )


def create_artifact(
    server: LiveServer, files: dict[str, bytes], sha256: dict[str, str] | None = None
) -> dict[str, Any]:
    """POST an artifact whose files have the given contents (or the given claimed hashes)."""
    sha256 = sha256 or {}
    response = curl(
        server,
        "POST",
        "/api/1.0/artifact/",
        json_body={
            "category": "debusine:test",
            "workspace": "System",
            "files": {
                path: {
                    "size": len(content),
                    "checksums": {"sha256": sha256.get(path, hashlib.sha256(content).hexdigest())},
                    "type": "file",
                    "content_type": None,
                }
                for path, content in files.items()
            },
            "data": {},
        },
    )
    assert response.status == 201, response.body
    artifact: dict[str, Any] = response.json()
    return artifact


def drop_connection_mid_body(server: LiveServer, url: str, content: bytes, start: int) -> None:
    """Announce `content[start:]` in a PUT, send a quarter of it, then close the socket."""
    parts = urlsplit(server.base_url)
    body = content[start:]
    head = (
        f"PUT {url} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        f"Token: {server.token}\r\n"
        f"Content-Range: bytes {start}-{len(content) - 1}/{len(content)}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode()
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(head + body[: len(body) // 4])
    # Let the server notice the disconnect before the next probe.
    time.sleep(0.5)


def test_noop_work_request_is_created_pending_and_read_back(debusine_server: LiveServer) -> None:
    created = curl(
        debusine_server,
        "POST",
        "/api/1.0/work-request/",
        json_body={"task_name": "noop", "task_data": {"result": True}, "event_reactions": {}},
    )
    assert created.status == 200, created.body
    work_request = created.json()
    assert work_request["task_name"] == "noop"
    assert work_request["status"] == "pending"
    assert work_request["result"] == ""
    assert work_request["artifacts"] == []
    assert work_request["worker"] is None
    assert work_request["workspace"] == "System"

    shown = curl(debusine_server, "GET", f"/api/1.0/work-request/{work_request['id']}/")
    assert shown.status == 200
    assert shown.json()["id"] == work_request["id"]
    assert shown.json()["status"] == "pending"
    assert shown.json()["task_data"] == {"result": True}


def test_noop_with_unknown_task_data_is_a_problem(debusine_server: LiveServer) -> None:
    response = curl(
        debusine_server,
        "POST",
        "/api/1.0/work-request/",
        json_body={"task_name": "noop", "task_data": {"foo": "bar"}},
    )
    assert response.status == 400
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["title"]


def test_anonymous_create_is_refused(debusine_server: LiveServer) -> None:
    response = curl(
        debusine_server,
        "POST",
        "/api/1.0/work-request/",
        json_body={"task_name": "noop", "task_data": {}},
        token=None,
    )
    assert response.status == 403
    assert response.headers["content-type"] == PROBLEM_JSON


def test_upload_resumes_after_a_dropped_connection(debusine_server: LiveServer) -> None:
    path = "data/blob.bin"
    content = os.urandom(256 * 1024)
    size = len(content)
    artifact = create_artifact(debusine_server, {path: content})
    assert artifact["files_to_upload"] == [path]
    artifact_id = artifact["id"]

    first = probe(debusine_server, artifact_id, path, size)
    assert first.status == 206
    assert first.headers["range"] == "bytes=0-0"

    half = size // 2
    chunk = curl(
        debusine_server,
        "PUT",
        upload_url(artifact_id, path),
        data=content[:half],
        headers={"Content-Range": f"bytes 0-{half - 1}/{size}"},
    )
    assert chunk.status == 200
    assert chunk.headers["range"] == f"bytes=0-{half}"

    drop_connection_mid_body(debusine_server, upload_url(artifact_id, path), content, half)

    resumed = probe(debusine_server, artifact_id, path, size)
    assert resumed.status == 206
    received = int(resumed.headers["range"].removeprefix("bytes=0-"))
    assert half <= received < size

    done = put_chunk(debusine_server, artifact_id, path, content, received)
    assert done.status == 201, done.body

    shown = curl(debusine_server, "GET", f"/api/1.0/artifact/{artifact_id}/")
    assert shown.status == 200
    details = shown.json()
    assert details["files_to_upload"] == []
    download_url = details["files"][path]["url"]

    whole = curl(debusine_server, "GET", download_url)
    assert whole.status == 200
    assert whole.body == content
    assert whole.headers.get("accept-ranges") == "bytes"

    ranged = curl(debusine_server, "GET", download_url, headers={"Range": "bytes=10-19"})
    assert ranged.status == 206
    assert ranged.body == content[10:20]


def test_upload_with_the_wrong_hash_is_a_conflict(debusine_server: LiveServer) -> None:
    path = "claimed.txt"
    claimed = b"what the client said it would send\n"
    sent = b"something else, of the same size!!\n"
    assert len(sent) == len(claimed)
    artifact = create_artifact(
        debusine_server, {path: sent}, sha256={path: hashlib.sha256(claimed).hexdigest()}
    )

    response = put_chunk(debusine_server, artifact["id"], path, sent, 0)
    assert response.status == 409
    assert response.headers["content-type"] == PROBLEM_JSON

    # The partial upload was discarded: the next attempt starts from zero.
    again = probe(debusine_server, artifact["id"], path, len(sent))
    assert again.status == 206
    assert again.headers["range"] == "bytes=0-0"


def test_a_json_body_over_the_limit_is_a_413_problem_without_a_traceback(
    debusine_server: LiveServer,
) -> None:
    log = debusine_server.instance.log
    log_before = log.read_bytes() if log.exists() else b""
    body = {"task_name": "noop", "task_data": {"padding": "x" * (10 * 1024 * 1024 + 1)}}

    response = curl(debusine_server, "POST", "/api/1.0/work-request/", json_body=body)

    assert response.status == 413
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["title"] == "Request body too large"
    assert "10485760 bytes" in problem["detail"]
    assert problem["status"] == 413
    time.sleep(0.5)  # let the server's log reach the file
    logged = (log.read_bytes() if log.exists() else b"")[len(log_before) :]
    assert b"Traceback" not in logged and b"RequestDataTooBig" not in logged


def test_unknown_api_url_and_non_numeric_id_are_404_problems(debusine_server: LiveServer) -> None:
    for url in ("/api/1.0/no-such-thing/", "/api/1.0/work-request/abc/"):
        response = curl(debusine_server, "GET", url)
        assert response.status == 404
        assert response.headers["content-type"] == PROBLEM_JSON


def test_unknown_token_is_a_401_problem(debusine_server: LiveServer) -> None:
    response = curl(debusine_server, "GET", "/api/1.0/work-request/", token="0" * 64)
    assert response.status == 401
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["title"] == "Invalid token"
