"""
Resumable, verified uploads of `DebusineClient` against a real server: resuming a partial
upload, restarting after a hash mismatch, and surviving a connection cut in the middle of a
chunk (through a TCP proxy that drops it). This uploader is the project's only one: the
worker's debug logs and the tasks' output artifacts go through it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from debusine.client.client import DebusineClient, LocalFile
from debusine.client.errors import LocalFileError, UploadError
from debusine.client.uploads import FileUploader
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.integration

SIZE = 100_000
CHUNK = 30_000


@pytest.fixture
def client(debusine_server: LiveServer) -> DebusineClient:
    return DebusineClient(debusine_server.api_url, debusine_server.token, "debusine")


@pytest.fixture
def local_file(tmp_path: Path) -> LocalFile:
    path = tmp_path / "payload.bin"
    # Contents of its own: a blob the server already has would be complete without upload.
    seed = hashlib.sha256(secrets.token_bytes(16)).digest()
    path.write_bytes((seed * (SIZE // 32 + 1))[:SIZE])
    return LocalFile.from_path(path)


def send_partial(client: DebusineClient, artifact_id: int, contents: bytes) -> None:
    """What an earlier, interrupted client left on the server: the first bytes only."""
    response = requests.put(
        client.file_upload_url(artifact_id, "payload.bin"),
        data=contents,
        headers={**client.headers(), "Content-Range": f"bytes 0-{len(contents) - 1}/{SIZE}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Range"] == f"bytes=0-{len(contents)}"


def downloaded(client: DebusineClient, artifact_id: int, tmp_path: Path) -> bytes:
    artifact = client.artifact_get(artifact_id)
    assert artifact.files_to_upload == []
    destination = tmp_path / "downloaded"
    client.download_file("payload.bin", artifact.files["payload.bin"], destination)
    return destination.read_bytes()


def test_upload_resumes_from_what_the_server_holds(
    client: DebusineClient, local_file: LocalFile, tmp_path: Path
) -> None:
    artifact = client.artifact_create("debusine:test", {"payload.bin": local_file}, {})
    send_partial(client, artifact.id, local_file.path.read_bytes()[:40_000])
    uploader = FileUploader(client, chunk_size=CHUNK, retry_delay=0)

    uploader.upload(artifact.id, "payload.bin", local_file)

    assert uploader.events == [
        ("probe", 40_000),
        ("chunk", 40_000, 69_999, 200),
        ("chunk", 70_000, 99_999, 201),
    ]
    assert downloaded(client, artifact.id, tmp_path) == local_file.path.read_bytes()


def test_hash_mismatch_restarts_the_whole_file(
    client: DebusineClient, local_file: LocalFile, tmp_path: Path
) -> None:
    artifact = client.artifact_create("debusine:test", {"payload.bin": local_file}, {})
    send_partial(client, artifact.id, b"\0" * 40_000)  # not what the file holds
    uploader = FileUploader(client, chunk_size=CHUNK, retry_delay=0)

    uploader.upload(artifact.id, "payload.bin", local_file)

    assert uploader.events == [
        ("probe", 40_000),
        ("chunk", 40_000, 69_999, 200),
        ("chunk", 70_000, 99_999, 409),
        ("probe", 0),
        ("chunk", 0, 29_999, 200),
        ("chunk", 30_000, 59_999, 200),
        ("chunk", 60_000, 89_999, 200),
        ("chunk", 90_000, 99_999, 201),
    ]
    assert downloaded(client, artifact.id, tmp_path) == local_file.path.read_bytes()


def test_persistent_hash_mismatch_fails_after_three_attempts(
    client: DebusineClient, local_file: LocalFile
) -> None:
    claimed = LocalFile(local_file.path, local_file.size, "ab" * 32)
    artifact = client.artifact_create("debusine:test", {"payload.bin": claimed}, {})
    uploader = FileUploader(client, chunk_size=SIZE, retry_delay=0)

    with pytest.raises(UploadError, match="different SHA-256 3 times"):
        uploader.upload(artifact.id, "payload.bin", claimed)

    assert [event for event in uploader.events if event[0] == "chunk"] == [
        ("chunk", 0, SIZE - 1, 409)
    ] * 3
    assert client.artifact_get(artifact.id).files_to_upload == ["payload.bin"]


class CuttingProxy:
    """Forwards TCP to the server; the first connection is cut after `limit` bytes upstream."""

    def __init__(self, target_port: int, limit: int) -> None:
        self.target_port = target_port
        self.limit = limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.cuts = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            limit = self.limit if self.connections == 1 else None
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(
                target=self.pipe, args=(downstream, upstream, limit), daemon=True
            ).start()
            threading.Thread(
                target=self.pipe, args=(upstream, downstream, None), daemon=True
            ).start()

    def pipe(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    sink.sendall(data[: limit - sent])
                    self.cuts += 1
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def cutting_proxy(debusine_server: LiveServer) -> Iterator[CuttingProxy]:
    port = int(debusine_server.base_url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, limit=CHUNK + 15_000)  # inside the second chunk
    yield proxy
    proxy.close()


def test_interrupted_connection_resumes(
    debusine_server: LiveServer,
    cutting_proxy: CuttingProxy,
    local_file: LocalFile,
    tmp_path: Path,
) -> None:
    client = DebusineClient(
        f"http://127.0.0.1:{cutting_proxy.port}/api", debusine_server.token, "debusine"
    )
    # Created directly, so that the proxy's first connection carries the upload.
    direct = DebusineClient(debusine_server.api_url, debusine_server.token, "debusine")
    artifact = direct.artifact_create("debusine:test", {"payload.bin": local_file}, {})
    uploader = FileUploader(client, chunk_size=CHUNK, retry_delay=0)

    uploader.upload(artifact.id, "payload.bin", local_file)

    assert cutting_proxy.cuts == 1
    probes = [event for event in uploader.events if event[0] == "probe"]
    assert probes[0] == ("probe", 0)
    assert len(probes) == 2  # probed again after the cut, and resumed from there
    resumed_from = probes[1][1]
    assert isinstance(resumed_from, int)
    assert CHUNK <= resumed_from < SIZE
    assert uploader.events[-1][-1] == 201
    assert downloaded(direct, artifact.id, tmp_path) == local_file.path.read_bytes()


def test_read_error_during_upload_is_a_local_error_not_retried(
    client: DebusineClient, local_file: LocalFile, tmp_path: Path
) -> None:
    # The file was hashed, then its disk fails: reads now give EIO (/proc/self/mem at offset
    # 0 is a real file whose reads do). Not the server's fault: no retry, no UploadError.
    link = tmp_path / "failing.bin"
    link.symlink_to(local_file.path)
    hashed = LocalFile.from_path(link)
    artifact = client.artifact_create("debusine:test", {"payload.bin": hashed}, {})
    link.unlink()
    link.symlink_to("/proc/self/mem")
    uploader = FileUploader(client, chunk_size=CHUNK, retry_delay=0)

    with pytest.raises(LocalFileError, match=f"cannot read {link}: Input/output error"):
        uploader.upload(artifact.id, "payload.bin", hashed)

    assert uploader.events == [("probe", 0)]
    assert client.artifact_get(artifact.id).files_to_upload == ["payload.bin"]
