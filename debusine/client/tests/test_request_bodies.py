"""
The request bodies the client builds from the protocol's request models are those Debusine's
client sends: optional keys as null, `workspace` (and `expiration_delay`) left out when unset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from debusine.client.client import wire_body
from debusine.client.uploads import LocalFile
from debusine.protocol.artifacts import ArtifactCreateRequest
from debusine.protocol.work_requests import WorkRequestCreateRequest


def test_a_work_request_body_without_workspace_leaves_the_key_out() -> None:
    request = WorkRequestCreateRequest(task_name="noop", task_data={}, event_reactions={})

    assert wire_body(request, omit_when_none=("workspace",)) == {
        "task_name": "noop",
        "task_data": {},
        "event_reactions": {},
    }


def test_an_artifact_body_is_what_debusine_clients_send(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"abc")
    local = LocalFile.from_path(path, "text/plain")
    request = ArtifactCreateRequest(
        category="debusine:test",
        files={"a.txt": local.as_request()},
        data={"k": 1},
        work_request=None,
        expire_at=datetime(2030, 1, 1, tzinfo=UTC),
        workspace="System",
    )

    body = wire_body(request, omit_when_none=("workspace", "expiration_delay"))

    assert body == {
        "category": "debusine:test",
        "workspace": "System",
        "files": {
            "a.txt": {
                "size": 3,
                "checksums": {
                    "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                },
                "type": "file",
                "content_type": "text/plain",
            }
        },
        "data": {"k": 1},
        "work_request": None,
        "expire_at": "2030-01-01T00:00:00Z",
    }
