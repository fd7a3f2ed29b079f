"""
Store faults: an S3 store that is down or too slow (rows `s3-down` and `s3-slow` of the fault
table, `tests/faults/table.py`).

The API answers a retriable 503 problem within a bounded time, and nothing changes: the file
stays incomplete, no `FileInStore` row appears, the store's size is unchanged, and the verified
upload waits in the upload directory, so that a probe completes it once the store is back. The
store is a moto server of this module's own (stopped and started again on the same port); the
slow one is a port that accepts connections and never answers.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from debusine.server.api.errors import PROBLEM_CONTENT_TYPE
from debusine.server.db.models import Artifact, FileInArtifact, FileInStore, FileStore, User
from debusine.testing.moto import MotoS3Server
from debusine.testing.playground import FileSpec, Playground, api_client

CONTENTS = os.urandom(200 * 1024)

#: Time limits of the stores under test (seconds), and how long an answer may take at most.
TIMEOUT = 1
ATTEMPTS = 2
ANSWER_WITHIN = 15.0


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3Server]:
    """A moto server of this module's own: the tests stop it."""
    server = MotoS3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint URL whose port accepts TCP connections and never answers a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def s3_first(playground: Playground, configuration: dict[str, Any]) -> FileStore:
    """An S3 store that the default scope uploads to first, with short time limits."""
    return playground.create_file_store(
        f"s3-{os.urandom(3).hex()}",
        backend="S3",
        configuration={
            **configuration,
            "connect_timeout": TIMEOUT,
            "read_timeout": TIMEOUT,
            "max_attempts": ATTEMPTS,
        },
        upload_priority=10,
        download_priority=10,
    )


def upload(client: APIClient, artifact: Artifact, content_range: str | None = None) -> Any:
    headers = {"Content-Range": content_range} if content_range else {}
    body = b"" if content_range and "*" in content_range else CONTENTS
    return client.put(
        f"/api/1.0/artifact/{artifact.pk}/files/data.bin/",
        body,
        content_type="application/octet-stream",
        headers=headers,
    )


def assert_unchanged(artifact: Artifact, store: FileStore, uploads: Path) -> None:
    """The failed request changed nothing but keeping the verified upload for later."""
    item = FileInArtifact.objects.select_related("file").get(artifact=artifact)
    assert not item.complete
    assert not FileInStore.objects.filter(file=item.file).exists()
    store.refresh_from_db()
    assert store.total_size == 0
    assert [path.stat().st_size for path in uploads.iterdir()] == [len(CONTENTS)]


def assert_retriable_problem(response: Any, store: FileStore, elapsed: float) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert response["Retry-After"].isdigit()
    problem = response.json()
    assert problem["title"] == "File store unavailable"
    assert f"The file store {store.name!r} could not take the file" in problem["detail"]
    assert elapsed < ANSWER_WITHIN, f"the answer took {elapsed:.1f} s"


def test_s3_store_down_is_a_retriable_503_that_changes_nothing(
    playground: Playground,
    user: User,
    user_token: str,
    moto: MotoS3Server,
    file_directories: Path,
) -> None:
    bucket = moto.new_bucket()
    store = s3_first(playground, moto.store_configuration(bucket))
    artifact = playground.create_artifact(files=[FileSpec("data.bin", CONTENTS)])
    client = api_client(user_token)

    moto.stop()
    try:
        started = time.monotonic()
        response = upload(client, artifact)
        elapsed = time.monotonic() - started
        print(f"S3 down: answered {response.status_code} in {elapsed:.1f} s")
        assert_retriable_problem(response, store, elapsed)
        assert_unchanged(artifact, store, file_directories / "uploads")
        # Probing while the store is still down: the same answer, still nothing changed.
        assert upload(client, artifact, f"bytes */{len(CONTENTS)}").status_code == 503
        assert_unchanged(artifact, store, file_directories / "uploads")
    finally:
        moto.start()  # on the same port: the store's configuration still points at it
        # moto keeps nothing across a restart; a real service that comes back has its bucket.
        moto.client().create_bucket(Bucket=bucket)

    # Back up: a probe completes the file from the verified upload; nothing is sent again.
    assert upload(client, artifact, f"bytes */{len(CONTENTS)}").status_code == 200
    item = FileInArtifact.objects.select_related("file").get(artifact=artifact)
    assert item.complete
    assert list(FileInStore.objects.filter(file=item.file).values_list("store", flat=True)) == [
        store.pk
    ]
    body = (
        moto.client()
        .get_object(
            Bucket=bucket,
            Key=f"{item.file.hash_hex[0:2]}/{item.file.hash_hex[2:4]}/{item.file.hash_hex[4:6]}/"
            f"{item.file.hash_hex}-{len(CONTENTS)}",
        )["Body"]
        .read()
    )
    assert body == CONTENTS
    assert list((file_directories / "uploads").iterdir()) == []


def test_slow_s3_store_is_a_retriable_503_within_its_time_limits(
    playground: Playground,
    user: User,
    user_token: str,
    moto: MotoS3Server,
    black_hole: str,
    file_directories: Path,
) -> None:
    configuration = moto.store_configuration("never-answered", endpoint_url=black_hole)
    store = s3_first(playground, configuration)
    artifact = playground.create_artifact(files=[FileSpec("data.bin", CONTENTS)])

    started = time.monotonic()
    response = upload(api_client(user_token), artifact)
    elapsed = time.monotonic() - started

    print(f"S3 never answering: answered {response.status_code} in {elapsed:.1f} s")
    assert_retriable_problem(response, store, elapsed)
    assert_unchanged(artifact, store, file_directories / "uploads")
