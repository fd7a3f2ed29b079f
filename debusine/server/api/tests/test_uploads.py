"""`PUT /api/1.0/artifact/<id>/files/<path>/`: the resumable upload state machine of §2.3."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.urls import resolve
from rest_framework.test import APIClient

from debusine.server.api.errors import PROBLEM_CONTENT_TYPE, ProblemError
from debusine.server.api.resumable_sha256 import ResumableSha256
from debusine.server.api.streamed_body import ClientDisconnectedError
from debusine.server.api.uploads import locked_partial_upload, parse_content_range, write_body
from debusine.server.db.models import (
    Artifact,
    FileInArtifact,
    FileInStore,
    FileStore,
    FileStoreInScope,
    FileUpload,
    User,
)
from debusine.server.file_stores import get_backend
from debusine.testing.filesystems import SmallFilesystem, small_filesystem
from debusine.testing.playground import FileSpec, Playground, api_client

CONTENTS = bytes(range(256)) * 40  # 10240 bytes
SIZE = len(CONTENTS)


@pytest.fixture(autouse=True)
def directories(file_directories: Path) -> Path:
    """Every test here stores and uploads under a temporary directory."""
    return file_directories


@pytest.fixture
def artifact(playground: Playground, user: User) -> Artifact:
    """An artifact whose file `dir/a file.bin` still needs uploading."""
    return playground.create_artifact(files=[FileSpec("dir/a file.bin", CONTENTS)])


def upload_url(artifact: Artifact, path: str = "dir/a file.bin") -> str:
    # The client percent-quotes the path and keeps its slashes.
    return f"/api/1.0/artifact/{artifact.pk}/files/{quote(path)}/"


def put(
    client: APIClient,
    url: str,
    body: bytes = b"",
    content_range: str | None = None,
    **headers: str,
) -> Any:
    if content_range is not None:
        headers["Content-Range"] = content_range
    return client.put(url, body, content_type="application/octet-stream", headers=headers)


def send_chunk(client: APIClient, url: str, start: int, end: int) -> Any:
    return put(client, url, CONTENTS[start : end + 1], f"bytes {start}-{end}/{SIZE}")


def probe(client: APIClient, url: str, size: int = SIZE) -> Any:
    return put(client, url, content_range=f"bytes */{size}")


def file_row(artifact: Artifact, path: str = "dir/a file.bin") -> FileInArtifact:
    return FileInArtifact.objects.select_related("file").get(artifact=artifact, path=path)


def assert_problem(response: Any, status_code: int, title: str) -> None:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["title"] == title


def assert_stored_in_default_store(artifact: Artifact, contents: bytes = CONTENTS) -> None:
    item = file_row(artifact)
    assert item.complete
    store = FileStore.objects.get(name=FileStore.DEFAULT_NAME)
    assert FileInStore.objects.filter(store=store, file=item.file).exists()
    with get_backend(store).open_contents(item.file) as reader:
        assert reader.read() == contents
    assert not FileUpload.objects.filter(file_in_artifact=item).exists()


def partial_files(directories: Path) -> list[Path]:
    uploads = directories / "uploads"
    return list(uploads.iterdir()) if uploads.exists() else []


def test_view_is_not_wrapped_in_a_transaction() -> None:
    view = resolve("/api/1.0/artifact/1/files/a/b/").func
    assert "default" in view._non_atomic_requests  # type: ignore[attr-defined]


def test_probe_before_any_upload(client: APIClient, artifact: Artifact) -> None:
    response = probe(client, upload_url(artifact))

    assert response.status_code == 206
    assert response["Range"] == "bytes=0-0"
    assert response.content == b""


def test_whole_file_in_one_put(client: APIClient, artifact: Artifact, directories: Path) -> None:
    response = put(client, upload_url(artifact), CONTENTS)

    assert response.status_code == 201
    assert response.content == b""
    assert_stored_in_default_store(artifact)
    assert partial_files(directories) == []


def test_whole_file_as_one_chunk(client: APIClient, artifact: Artifact) -> None:
    response = send_chunk(client, upload_url(artifact), 0, SIZE - 1)

    assert response.status_code == 201
    assert_stored_in_default_store(artifact)


def test_upload_in_chunks(
    client: APIClient, artifact: Artifact, directories: Path, django_assert_max_num_queries: Any
) -> None:
    url = upload_url(artifact)

    # Scope, token (and its last_seen_at), artifact, permission, file, upload row (created
    # in a savepoint: 4 queries), lock check, activity update.
    with django_assert_max_num_queries(13):
        first = send_chunk(client, url, 0, 4095)
    assert first.status_code == 200
    assert first["Range"] == "bytes=0-4096"
    assert not file_row(artifact).complete
    assert len(partial_files(directories)) == 1

    with django_assert_max_num_queries(8):
        second = send_chunk(client, url, 4096, 8191)
    assert second.status_code == 200
    assert second["Range"] == "bytes=0-8192"

    last = send_chunk(client, url, 8192, SIZE - 1)
    assert last.status_code == 201
    assert_stored_in_default_store(artifact)
    assert partial_files(directories) == []


def test_chunk_to_a_private_workspace_costs_no_extra_query(
    playground: Playground, user: User, django_assert_num_queries: Any
) -> None:
    private = playground.create_workspace("private")
    playground.grant(user, private)
    artifact = playground.create_artifact(workspace=private, files=[FileSpec("f", CONTENTS)])
    client = api_client(playground.create_user_token(user))
    url = upload_url(artifact, "f")
    send_chunk(client, url, 0, 4095)

    # Token, artifact, role (contributors see the workspace: no visibility query), file, upload
    # row, lock check, activity update. (No scope: the request names none and needs none.)
    with django_assert_num_queries(7):
        assert send_chunk(client, url, 4096, 8191).status_code == 200


def test_upload_resumed_after_a_dropped_connection(client: APIClient, artifact: Artifact) -> None:
    url = upload_url(artifact)
    # The connection dropped after 3000 bytes of a 6000-byte chunk reached the server.
    put(client, url, CONTENTS[:3000], f"bytes 0-5999/{SIZE}")

    status = probe(client, url)
    assert status.status_code == 206
    assert status["Range"] == "bytes=0-3000"

    offset = int(status["Range"].rsplit("-", 1)[1])
    response = send_chunk(client, url, offset, SIZE - 1)
    assert response.status_code == 201
    assert_stored_in_default_store(artifact)


def test_resending_an_earlier_chunk_is_accepted(client: APIClient, artifact: Artifact) -> None:
    url = upload_url(artifact)
    send_chunk(client, url, 0, 4999)

    response = send_chunk(client, url, 2000, 5999)
    assert response.status_code == 200
    assert response["Range"] == "bytes=0-6000"
    assert send_chunk(client, url, 6000, SIZE - 1).status_code == 201
    assert_stored_in_default_store(artifact)


def test_probe_when_every_byte_arrived_completes_the_file(
    client: APIClient, playground: Playground, artifact: Artifact
) -> None:
    FileStoreInScope.objects.filter(scope=playground.scope).update(read_only=True)
    url = upload_url(artifact)
    blocked = put(client, url, CONTENTS)
    assert_problem(blocked, 507, "No file store can hold this file")
    assert not file_row(artifact).complete

    FileStoreInScope.objects.filter(scope=playground.scope).update(read_only=False)
    response = probe(client, url)

    assert response.status_code == 200
    assert_stored_in_default_store(artifact)


def saved_hash(artifact: Artifact) -> tuple[int, bytes | None]:
    """(bytes covered, SHA-256 of them) of the partial upload's saved hash state."""
    upload = FileUpload.objects.get(file_in_artifact=file_row(artifact))
    if upload.sha256_state is None:
        return upload.hashed_size, None
    return upload.hashed_size, ResumableSha256.from_state(bytes(upload.sha256_state)).digest()


def test_each_chunk_saves_the_hash_state_of_what_the_server_holds(
    client: APIClient, artifact: Artifact
) -> None:
    url = upload_url(artifact)
    send_chunk(client, url, 0, 2999)
    assert saved_hash(artifact) == (3000, hashlib.sha256(CONTENTS[:3000]).digest())
    # A chunk cut short by a dropped connection: the state covers the bytes that arrived.
    put(client, url, CONTENTS[3000:5000], f"bytes 3000-6999/{SIZE}")
    assert saved_hash(artifact) == (5000, hashlib.sha256(CONTENTS[:5000]).digest())
    # Sending an earlier chunk again: hashed again from the file up to its start.
    send_chunk(client, url, 1000, 5999)
    assert saved_hash(artifact) == (6000, hashlib.sha256(CONTENTS[:6000]).digest())

    assert send_chunk(client, url, 6000, SIZE - 1).status_code == 201
    assert_stored_in_default_store(artifact)


def test_completion_hashes_only_from_the_saved_state(
    client: APIClient, artifact: Artifact, directories: Path
) -> None:
    url = upload_url(artifact)
    send_chunk(client, url, 0, 5999)
    # The first bytes on disk change behind the server's back: the saved state, computed as
    # they arrived, is what completion goes on from, so the file is never read again (the
    # stored copy then holds what is on disk; the point here is what gets read).
    partial = directories / "uploads" / FileUpload.objects.get().path
    with partial.open("r+b") as handle:
        handle.write(b"\0" * 100)

    assert send_chunk(client, url, 6000, SIZE - 1).status_code == 201


def test_a_saved_state_behind_the_file_is_caught_up_from_disk(
    client: APIClient, artifact: Artifact
) -> None:
    url = upload_url(artifact)
    send_chunk(client, url, 0, 5999)
    # As if the request that wrote bytes 3000-5999 died before saving its state.
    behind = ResumableSha256()
    behind.update(CONTENTS[:3000])
    FileUpload.objects.update(hashed_size=3000, sha256_state=behind.state())

    assert send_chunk(client, url, 6000, SIZE - 1).status_code == 201
    assert_stored_in_default_store(artifact)


@pytest.mark.parametrize("state", [b"not a state", b"x" * 133], ids=["garbage", "wrong-magic"])
def test_an_unusable_saved_state_means_hashing_from_the_start(
    client: APIClient, artifact: Artifact, state: bytes
) -> None:
    url = upload_url(artifact)
    send_chunk(client, url, 0, 5999)
    FileUpload.objects.update(hashed_size=6000, sha256_state=state)

    assert send_chunk(client, url, 6000, SIZE - 1).status_code == 201
    assert_stored_in_default_store(artifact)


def test_wrong_bytes_in_an_earlier_chunk_are_caught_by_the_saved_state(
    client: APIClient, artifact: Artifact, directories: Path
) -> None:
    url = upload_url(artifact)
    put(client, url, b"\xff" * 4096, f"bytes 0-4095/{SIZE}")

    response = send_chunk(client, url, 4096, SIZE - 1)

    assert_problem(response, 409, "SHA-256 mismatch")
    assert not FileUpload.objects.exists()
    assert partial_files(directories) == []


def test_a_body_announced_longer_than_its_range_leaves_the_hash_state(
    client: APIClient, artifact: Artifact
) -> None:
    url = upload_url(artifact)
    send_chunk(client, url, 0, 2999)
    response = put(client, url, CONTENTS[1000:5000], f"bytes 1000-1999/{SIZE}")
    assert response.status_code == 400
    assert saved_hash(artifact) == (3000, hashlib.sha256(CONTENTS[:3000]).digest())


class Batches:
    """A body reader giving `batches` one by one."""

    def __init__(self, *batches: bytes) -> None:
        self.batches = list(batches)

    def read_batch(self) -> bytes:
        return self.batches.pop(0) if self.batches else b""


def test_a_body_longer_than_its_range_forgets_the_hash_state(
    client: APIClient, artifact: Artifact
) -> None:
    url = upload_url(artifact)
    send_chunk(client, url, 0, 2999)
    requested = parse_content_range(f"bytes 1000-1999/{SIZE}", SIZE)
    # No Content-Length to refuse it early: found out while writing, after a first batch that
    # overwrote bytes the saved state covered.
    with locked_partial_upload(file_row(artifact)) as partial:
        assert partial is not None
        with pytest.raises(ProblemError, match="longer than the Content-Range"):
            write_body(partial, Batches(b"z" * 600, b"z" * 600), requested)
        assert partial.received == 3000
    assert saved_hash(artifact) == (0, None)

    # Hashed again from the file: the bytes it holds now do not match, and that is seen.
    assert_problem(send_chunk(client, url, 3000, SIZE - 1), 409, "SHA-256 mismatch")


def test_a_client_gone_mid_body_keeps_what_arrived_hashed(
    client: APIClient, artifact: Artifact
) -> None:
    class GoneAfterOneBatch(Batches):
        def read_batch(self) -> bytes:
            if not self.batches:
                raise ClientDisconnectedError("gone")
            return super().read_batch()

    requested = parse_content_range(f"bytes 0-{SIZE - 1}/{SIZE}", SIZE)
    with locked_partial_upload(file_row(artifact)) as partial:
        assert partial is not None
        with pytest.raises(ClientDisconnectedError):
            write_body(partial, GoneAfterOneBatch(CONTENTS[:4000]), requested)
    assert saved_hash(artifact) == (4000, hashlib.sha256(CONTENTS[:4000]).digest())

    url = upload_url(artifact)
    assert probe(client, url)["Range"] == "bytes=0-4000"
    assert send_chunk(client, url, 4000, SIZE - 1).status_code == 201
    assert_stored_in_default_store(artifact)


def test_probe_verifies_an_interrupted_complete_upload_with_wrong_contents(
    client: APIClient, artifact: Artifact, directories: Path
) -> None:
    # A request wrote every byte, then the server died before verifying them.
    (directories / "uploads").mkdir()
    (directories / "uploads" / "interrupted").write_bytes(b"y" * SIZE)
    FileUpload.objects.create(file_in_artifact=file_row(artifact), path="interrupted")

    response = probe(client, upload_url(artifact))

    assert response.status_code == 206
    assert response["Range"] == "bytes=0-0"
    assert not file_row(artifact).complete
    assert not FileUpload.objects.exists()
    assert partial_files(directories) == []


def test_hash_mismatch_discards_the_upload(
    client: APIClient, artifact: Artifact, directories: Path
) -> None:
    url = upload_url(artifact)
    send_chunk(client, url, 0, 4095)
    wrong = b"\xff" * (SIZE - 4096)

    response = put(client, url, wrong, f"bytes 4096-{SIZE - 1}/{SIZE}")

    assert_problem(response, 409, "SHA-256 mismatch")
    assert hashlib.sha256(CONTENTS).hexdigest() in response.json()["detail"]
    assert not file_row(artifact).complete
    assert not FileUpload.objects.exists()
    assert partial_files(directories) == []
    assert not FileInStore.objects.filter(file=file_row(artifact).file).exists()
    # The client starts over from the beginning.
    assert probe(client, url)["Range"] == "bytes=0-0"
    assert put(client, url, CONTENTS).status_code == 201


def test_hash_mismatch_of_a_whole_body(client: APIClient, artifact: Artifact) -> None:
    response = put(client, upload_url(artifact), b"x" * SIZE)
    assert_problem(response, 409, "SHA-256 mismatch")


def test_already_complete_file(
    client: APIClient, playground: Playground, artifact: Artifact
) -> None:
    url = upload_url(artifact)
    assert put(client, url, CONTENTS).status_code == 201

    assert probe(client, url).status_code == 200
    again = send_chunk(client, url, 0, 99)
    assert again.status_code == 201
    assert not FileUpload.objects.exists()


def test_empty_file(client: APIClient, playground: Playground) -> None:
    artifact = playground.create_artifact(files=[FileSpec("empty", b"")])
    url = upload_url(artifact, "empty")

    response = probe(client, url, size=0)

    assert response.status_code == 200
    assert file_row(artifact, "empty").complete


def test_empty_file_as_an_empty_put(client: APIClient, playground: Playground) -> None:
    artifact = playground.create_artifact(files=[FileSpec("empty", b"")])
    assert put(client, upload_url(artifact, "empty")).status_code == 201
    assert file_row(artifact, "empty").complete


def test_contents_already_stored_from_another_workspace(
    client: APIClient, playground: Playground, artifact: Artifact
) -> None:
    elsewhere = playground.create_workspace("elsewhere")
    playground.create_artifact(workspace=elsewhere, files=[FileSpec("x", CONTENTS)], complete=True)
    playground.store_contents(CONTENTS)
    store = FileStore.objects.get(name=FileStore.DEFAULT_NAME)
    total_size = store.total_size
    url = upload_url(artifact)

    # Knowing the hash is not enough: every byte must be sent.
    assert probe(client, url)["Range"] == "bytes=0-0"
    assert send_chunk(client, url, 0, 999).status_code == 200
    assert send_chunk(client, url, 1000, SIZE - 1).status_code == 201

    assert file_row(artifact).complete
    store.refresh_from_db()
    assert store.total_size == total_size
    assert FileInStore.objects.filter(file=file_row(artifact).file).count() == 1


def test_upload_goes_to_the_scope_upload_store(
    client: APIClient, playground: Playground, artifact: Artifact
) -> None:
    memory = playground.create_file_store("fast", upload_priority=10)

    assert put(client, upload_url(artifact), CONTENTS).status_code == 201

    file = file_row(artifact).file
    assert list(FileInStore.objects.filter(file=file).values_list("store", flat=True)) == [
        memory.pk
    ]
    with get_backend(memory).open_contents(file) as reader:
        assert reader.read() == CONTENTS


@pytest.mark.parametrize(
    ("content_range", "title"),
    [
        (f"bytes */{SIZE + 1}", "Invalid file size in Content-Range header"),
        (f"bytes 0-9/{SIZE - 1}", "Invalid file size in Content-Range header"),
        (f"bytes {SIZE + 1}-{SIZE + 2}/{SIZE}", "Invalid Content-Range header"),
        (f"bytes 0-{SIZE}/{SIZE}", "Invalid Content-Range header"),
        (f"bytes 10-9/{SIZE}", "Invalid Content-Range header"),
        ("bytes=0-9", "Invalid Content-Range header"),
        ("items 0-9/10", "Invalid Content-Range header"),
    ],
)
def test_invalid_content_range(
    client: APIClient, artifact: Artifact, content_range: str, title: str
) -> None:
    response = put(client, upload_url(artifact), b"0123456789", content_range)

    assert_problem(response, 400, title)
    assert not FileUpload.objects.exists()


def test_start_beyond_the_bytes_received(
    client: APIClient, artifact: Artifact, directories: Path
) -> None:
    url = upload_url(artifact)
    response = send_chunk(client, url, 100, 199)

    assert_problem(response, 400, "Range start beyond the bytes received")
    assert "offset 0" in response.json()["detail"]
    assert not FileUpload.objects.exists()
    assert partial_files(directories) == []

    send_chunk(client, url, 0, 49)
    response = send_chunk(client, url, 51, 99)
    assert_problem(response, 400, "Range start beyond the bytes received")
    assert probe(client, url)["Range"] == "bytes=0-50"


def test_body_longer_than_the_range(client: APIClient, artifact: Artifact) -> None:
    url = upload_url(artifact)
    response = put(client, url, CONTENTS[:200], f"bytes 0-99/{SIZE}")

    assert_problem(response, 400, "Request body longer than the Content-Range")
    assert probe(client, url)["Range"] == "bytes=0-0"


def test_whole_body_longer_than_the_file(client: APIClient, artifact: Artifact) -> None:
    response = put(client, upload_url(artifact), CONTENTS + b"extra")
    assert_problem(response, 400, "Request body longer than the Content-Range")


def test_unknown_artifact(client: APIClient, artifact: Artifact) -> None:
    response = probe(client, f"/api/1.0/artifact/{artifact.pk + 1000}/files/a/")
    assert_problem(response, 404, "Artifact not found")


def test_unknown_path(client: APIClient, artifact: Artifact) -> None:
    response = probe(client, upload_url(artifact, "dir/other"))
    assert_problem(response, 404, "File not found in artifact")


def test_path_traversal_is_just_an_unknown_path(client: APIClient, artifact: Artifact) -> None:
    response = probe(client, upload_url(artifact, "../../etc/passwd"))
    assert_problem(response, 404, "File not found in artifact")


def test_anonymous_is_refused(artifact: Artifact) -> None:
    response = probe(api_client(), upload_url(artifact))
    assert_problem(response, 403, "Error")


def test_user_without_create_permission(playground: Playground, artifact: Artifact) -> None:
    reader = playground.create_user("reader")
    response = probe(api_client(playground.create_user_token(reader)), upload_url(artifact))
    assert_problem(response, 403, "Permission denied")


def test_private_workspace_invisible_to_outsiders(playground: Playground, user: User) -> None:
    private = playground.create_workspace("private")
    artifact = playground.create_artifact(workspace=private, files=[FileSpec("f", CONTENTS)])
    outsider = playground.create_user("outsider")
    token = playground.create_user_token(outsider)

    response = probe(api_client(token), upload_url(artifact, "f"))

    assert_problem(response, 404, "Artifact not found")
    playground.grant(outsider, private)
    assert probe(api_client(token), upload_url(artifact, "f")).status_code == 206


def test_worker_uploads_the_outputs_of_its_own_work_requests(
    playground: Playground, user: User
) -> None:
    private = playground.create_workspace("private")
    worker, key = playground.create_worker()
    work_request = playground.create_work_request(
        created_by=user, workspace=private, worker=worker
    )
    artifact = playground.create_artifact(
        workspace=private,
        files=[FileSpec("f", CONTENTS)],
        created_by_work_request=work_request,
    )

    response = put(api_client(key), upload_url(artifact, "f"), CONTENTS)

    assert response.status_code == 201
    assert file_row(artifact, "f").complete


def test_worker_cannot_upload_to_other_artifacts(playground: Playground, user: User) -> None:
    _, key = playground.create_worker()
    other, _ = playground.create_worker("other")
    not_produced = playground.create_artifact(files=[FileSpec("f", CONTENTS)])
    of_other_worker = playground.create_artifact(
        files=[FileSpec("f", CONTENTS)],
        created_by_work_request=playground.create_work_request(created_by=user, worker=other),
    )

    for artifact in (not_produced, of_other_worker):
        response = put(api_client(key), upload_url(artifact, "f"), CONTENTS)
        assert_problem(response, 403, "Permission denied")
        assert not file_row(artifact, "f").complete


def test_disabled_worker_is_refused(playground: Playground, artifact: Artifact) -> None:
    _, key = playground.create_worker(enabled=False)
    assert_problem(probe(api_client(key), upload_url(artifact)), 403, "Token disabled")


def test_larger_file_streams_in_many_pieces(
    client: APIClient, playground: Playground, directories: Path
) -> None:
    # Bigger than the view's copy buffer, in chunks that do not align with it.
    contents = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)
    artifact = playground.create_artifact(files=[FileSpec("big", contents)])
    url = upload_url(artifact, "big")
    chunk = 1_000_003
    for start in range(0, len(contents), chunk):
        end = min(start + chunk, len(contents)) - 1
        response = put(
            client, url, contents[start : end + 1], f"bytes {start}-{end}/{len(contents)}"
        )
    assert response.status_code == 201
    with get_backend(FileStore.objects.get(name="Default")).open_contents(
        file_row(artifact, "big").file
    ) as reader:
        assert reader.read() == contents


@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_of_the_same_file(file_directories: Path) -> None:
    playground = Playground()
    uploader = playground.create_user("uploader")
    playground.grant(uploader, playground.workspace)
    token = playground.create_user_token(uploader)
    artifacts = [
        playground.create_artifact(files=[FileSpec("dir/a file.bin", CONTENTS)]) for _ in range(2)
    ]
    # Two requests per artifact, all four racing to complete the same contents.
    targets = [artifact for artifact in artifacts for _ in range(2)]
    statuses: list[int] = []
    barrier = threading.Barrier(len(targets))

    def upload(artifact: Artifact) -> None:
        from django.db import connection

        try:
            barrier.wait()
            statuses.append(put(api_client(token), upload_url(artifact), CONTENTS).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(artifact,)) for artifact in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [201] * 4
    for artifact in artifacts:
        assert_stored_in_default_store(artifact)
    file = file_row(artifacts[0]).file
    assert FileInStore.objects.filter(file=file).count() == 1
    assert FileStore.objects.get(name="Default").total_size == SIZE
    assert not FileUpload.objects.exists()
    assert partial_files(file_directories) == []


# --- Full disks (a tmpfs that holds less than the file) ------------------------------------

#: A tmpfs that cannot hold CONTENTS (10240 bytes): two 4 KiB pages.
TOO_SMALL = 8192


@pytest.fixture
def full_store(directories: Path) -> Iterator[SmallFilesystem]:
    with small_filesystem(directories / "store", TOO_SMALL) as filesystem:
        yield filesystem


@pytest.fixture
def full_upload_directory(directories: Path) -> Iterator[SmallFilesystem]:
    with small_filesystem(directories / "uploads", TOO_SMALL) as filesystem:
        yield filesystem


def test_a_full_store_is_a_507_and_keeps_no_partial_file(
    client: APIClient, artifact: Artifact, full_store: SmallFilesystem, directories: Path
) -> None:
    response = put(client, upload_url(artifact), CONTENTS)

    assert_problem(response, 507, "Insufficient storage")
    assert "The file store 'Default' is full" in response.json()["detail"]
    assert full_store.files() == []  # no half-copied file, no temporary file
    item = file_row(artifact)
    assert not item.complete
    assert not FileInStore.objects.filter(file=item.file).exists()
    # The verified upload waits: once the store has room, a probe completes the file.
    assert len(partial_files(directories)) == 1
    full_store.resize(1024 * 1024)
    assert probe(client, upload_url(artifact)).status_code == 200
    assert_stored_in_default_store(artifact)
    assert partial_files(directories) == []


def test_a_full_upload_directory_is_a_507_and_keeps_nothing_of_the_request(
    client: APIClient, artifact: Artifact, full_upload_directory: SmallFilesystem
) -> None:
    url = upload_url(artifact)
    assert send_chunk(client, url, 0, 4095).status_code == 200

    response = send_chunk(client, url, 4096, SIZE - 1)

    assert_problem(response, 507, "Insufficient storage")
    assert "The server's upload directory is full" in response.json()["detail"]
    # The file holds what it held before the failed request: the client resumes from there.
    response = probe(client, url)
    assert (response.status_code, response["Range"]) == (206, "bytes=0-4096")
    assert not file_row(artifact).complete
    full_upload_directory.resize(1024 * 1024)
    assert send_chunk(client, url, 4096, SIZE - 1).status_code == 201
    assert_stored_in_default_store(artifact)


def test_received_bytes_are_counted(client: APIClient, artifact: Artifact, settings: Any) -> None:
    from debusine.server.metrics import events, families

    settings.DEBUSINE_REDIS_KEY_PREFIX = f"test-upload-bytes-{artifact.pk}-{id(settings)}"
    url = upload_url(artifact)
    try:
        assert send_chunk(client, url, 0, 4095).status_code == 200
        assert send_chunk(client, url, 4096, SIZE - 1).status_code == 201

        events.flush()
        (raw,) = events.read_families([families.UPLOAD_BYTES])
        assert events.read_counter(raw) == {(): SIZE}
    finally:
        events.redis_client().delete(events.family_key(families.UPLOAD_BYTES))


def test_chunk_over_the_limit_is_a_413_and_writes_nothing(
    client: APIClient, artifact: Artifact, directories: Path, settings: Any
) -> None:
    settings.DEBUSINE_MAX_UPLOAD_CHUNK_SIZE = 10
    url = upload_url(artifact)

    response = send_chunk(client, url, 0, 10)  # 11 bytes

    assert_problem(response, 413, "Upload chunk too large")
    assert "DEBUSINE_MAX_UPLOAD_CHUNK_SIZE" in response.json()["detail"]
    assert partial_files(directories) == []
    assert probe(client, url)["Range"] == "bytes=0-0"
    # Chunks within the limit go through.
    assert send_chunk(client, url, 0, 9).status_code == 200
