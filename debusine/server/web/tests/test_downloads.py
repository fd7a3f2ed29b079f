"""Web downloads: one artifact file (with ranges) or the whole artifact as a tar.gz."""

from __future__ import annotations

import gzip
import io
import logging
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from debusine.server.db.models import Artifact, FileInArtifact, Token, User, Workspace
from debusine.testing.playground import FileSpec, Playground

CONTENTS = b"0123456789abcdef" * 64  # 1024 bytes
BIG = os.urandom(3 * 1024 * 1024 + 123)  # several download chunks


@pytest.fixture(autouse=True)
def directories(file_directories: Path) -> Path:
    """Every test here reads the Default store from a temporary directory."""
    return file_directories


def stored_artifact(
    playground: Playground, files: dict[str, bytes], workspace: Workspace | None = None
) -> Artifact:
    """A complete artifact whose contents are in the Default store."""
    artifact = playground.create_artifact(
        files=[FileSpec(path, contents) for path, contents in files.items()],
        complete=True,
        workspace=workspace,
    )
    for contents in files.values():
        if contents:
            playground.store_contents(contents)
    return artifact


def file_url(artifact: Artifact, path: str) -> str:
    workspace = artifact.workspace
    return f"/{workspace.scope.name}/{workspace.name}/artifact/{artifact.pk}/download/{path}"


def artifact_url(artifact: Artifact, query: str = "") -> str:
    return file_url(artifact, "") + query


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def tar_members(data: bytes) -> dict[str, tuple[bytes, tarfile.TarInfo]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = {}
        for info in archive.getmembers():
            extracted = archive.extractfile(info)
            assert extracted is not None
            members[info.name] = (extracted.read(), info)
        return members


@pytest.fixture
def artifact(playground: Playground) -> Artifact:
    return stored_artifact(playground, {"dir/hello world.txt": CONTENTS, "big.bin": BIG})


def test_download_a_file(client: Client, artifact: Artifact) -> None:
    response = client.get(file_url(artifact, "dir/hello%20world.txt"))

    assert response.status_code == 200
    assert body(response) == CONTENTS
    assert response["Content-Length"] == str(len(CONTENTS))
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="hello world.txt"'


def test_download_a_big_file(client: Client, artifact: Artifact) -> None:
    response = client.get(file_url(artifact, "big.bin"))
    assert body(response) == BIG


def test_content_type_recorded_for_the_file(client: Client, artifact: Artifact) -> None:
    FileInArtifact.objects.filter(artifact=artifact, path="big.bin").update(
        content_type="application/x-tar"
    )
    assert client.get(file_url(artifact, "big.bin"))["Content-Type"] == "application/x-tar"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=2-5", 2, 5),
        ("bytes=1000-", 1000, 1023),
        ("bytes=-24", 1000, 1023),
        ("bytes=-5000", 0, 1023),
        ("bytes=10-99999", 10, 1023),
        ("bytes=0-0", 0, 0),
    ],
)
def test_range(client: Client, artifact: Artifact, header: str, start: int, end: int) -> None:
    response = client.get(file_url(artifact, "dir/hello world.txt"), headers={"Range": header})

    assert response.status_code == 206
    assert body(response) == CONTENTS[start : end + 1]
    assert response["Content-Range"] == f"bytes {start}-{end}/1024"
    assert response["Content-Length"] == str(end - start + 1)


def test_range_inside_a_big_file(client: Client, artifact: Artifact) -> None:
    start, end = 1024 * 1024 - 10, 2 * 1024 * 1024 + 10
    response = client.get(file_url(artifact, "big.bin"), headers={"Range": f"bytes={start}-{end}"})
    assert body(response) == BIG[start : end + 1]


@pytest.mark.parametrize(
    "header", ["bytes=1024-", "bytes=5-2", "bytes=abc", "bytes=-0", "bytes=-", "bytes=1-2-3"]
)
def test_unsatisfiable_range(client: Client, artifact: Artifact, header: str) -> None:
    response = client.get(file_url(artifact, "dir/hello world.txt"), headers={"Range": header})

    assert response.status_code == 416
    assert response["Content-Range"] == "bytes */1024"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1"])
def test_ranges_we_do_not_serve_get_the_whole_file(
    client: Client, artifact: Artifact, header: str
) -> None:
    response = client.get(file_url(artifact, "dir/hello world.txt"), headers={"Range": header})
    assert response.status_code == 200
    assert body(response) == CONTENTS


def test_empty_file_needs_no_store_contents(client: Client, playground: Playground) -> None:
    artifact = stored_artifact(playground, {"empty": b""})

    response = client.get(file_url(artifact, "empty"))

    assert response.status_code == 200
    assert body(response) == b""
    assert response["Content-Length"] == "0"
    assert (
        client.get(file_url(artifact, "empty"), headers={"Range": "bytes=0-"}).status_code == 416
    )


@pytest.mark.parametrize(
    "path",
    [
        "missing",
        "dir",
        "dir/",
        "../../../../etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "dir/../big.bin",
    ],
)
def test_unknown_paths_are_404(client: Client, artifact: Artifact, path: str) -> None:
    assert client.get(file_url(artifact, path)).status_code == 404


def test_incomplete_file_is_404(client: Client, playground: Playground) -> None:
    artifact = playground.create_artifact(files=[FileSpec("f", CONTENTS)])
    assert client.get(file_url(artifact, "f")).status_code == 404


def test_contents_missing_from_every_store(
    client: Client, playground: Playground, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = playground.create_artifact(files=[FileSpec("f", b"lost")], complete=True)

    with caplog.at_level(logging.ERROR, logger="debusine.server.web.downloads"):
        assert client.get(file_url(artifact, "f")).status_code == 404
        assert client.get(artifact_url(artifact)).status_code == 404

    assert "in no readable store" in caplog.text


def test_contents_recorded_but_gone_from_the_store(
    client: Client, artifact: Artifact, directories: Path
) -> None:
    for path in (directories / "store").rglob("*"):
        if path.is_file():
            path.unlink()
    assert client.get(file_url(artifact, "big.bin")).status_code == 404


def test_unknown_scope_workspace_or_artifact(
    client: Client, playground: Playground, artifact: Artifact
) -> None:
    other = playground.create_workspace("other", public=True)
    for url in [
        f"/nope/System/artifact/{artifact.pk}/download/big.bin",
        f"/debusine/nope/artifact/{artifact.pk}/download/big.bin",
        f"/debusine/other/artifact/{artifact.pk}/download/big.bin",
        f"/debusine/{other.name}/artifact/{artifact.pk}/download/",
        f"/debusine/System/artifact/{artifact.pk + 1000}/download/big.bin",
    ]:
        assert client.get(url).status_code == 404, url


def test_private_workspace(client: Client, playground: Playground) -> None:
    private = playground.create_workspace("private")
    artifact = stored_artifact(playground, {"f": CONTENTS}, workspace=private)
    url = file_url(artifact, "f")
    viewer = playground.create_user("viewer")
    playground.grant(viewer, private, "viewer")
    outsider_token = playground.create_user_token(playground.create_user("outsider"))
    _, worker_token = playground.create_worker()
    _, disabled_worker_token = playground.create_worker("disabled", enabled=False)

    assert client.get(url).status_code == 404
    assert client.get(url, headers={"Token": outsider_token}).status_code == 404
    # A token that is not valid is refused, not served as anonymous.
    assert client.get(url, headers={"Token": disabled_worker_token}).status_code == 403
    assert client.get(url, headers={"Token": "not a token"}).status_code == 403
    viewer_token = playground.create_user_token(viewer)
    assert body(client.get(url, headers={"Token": viewer_token})) == CONTENTS
    assert body(client.get(url, headers={"token": worker_token})) == CONTENTS
    disabled_viewer = playground.create_user_token(viewer, enabled=False)
    assert client.get(url, headers={"Token": disabled_viewer}).status_code == 403


def test_token_of_a_user_and_a_worker_is_refused(
    client: Client, playground: Playground, user: User
) -> None:
    artifact = stored_artifact(playground, {"f": CONTENTS})
    worker, key = playground.create_worker()
    assert worker.token is not None
    worker.token.user = user
    worker.token.save()

    assert client.get(file_url(artifact, "f"), headers={"Token": key}).status_code == 403


def test_download_records_the_token_as_seen_even_when_disabled(
    client: Client, artifact: Artifact, user: User, playground: Playground
) -> None:
    key = playground.create_user_token(user, enabled=False)

    assert client.get(file_url(artifact, "big.bin"), headers={"Token": key}).status_code == 403

    token = Token.objects.get(user=user, enabled=False)
    assert token.last_seen_at is not None


def test_inactive_user_is_refused(client: Client, playground: Playground) -> None:
    private = playground.create_workspace("private")
    artifact = stored_artifact(playground, {"f": CONTENTS}, workspace=private)
    viewer = playground.create_user("viewer", is_active=False)
    playground.grant(viewer, private, "viewer")
    token = playground.create_user_token(viewer)

    assert client.get(file_url(artifact, "f"), headers={"Token": token}).status_code == 403


def test_tar_gz(client: Client, playground: Playground, user: User) -> None:
    artifact = stored_artifact(
        playground, {"dir/hello world.txt": CONTENTS, "big.bin": BIG, "empty": b""}
    )
    FileInArtifact.objects.create(
        artifact=artifact,
        path="not-uploaded",
        file=playground.store_contents(b"elsewhere"),
        complete=False,
    )

    response = client.get(artifact_url(artifact, "?archive=tar.gz"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert (
        response["Content-Disposition"] == f'attachment; filename="artifact-{artifact.pk}.tar.gz"'
    )
    data = body(response)
    members = tar_members(data)
    assert sorted(members) == ["big.bin", "dir/hello world.txt", "empty"]
    assert members["big.bin"][0] == BIG
    assert members["dir/hello world.txt"][0] == CONTENTS
    assert members["empty"][0] == b""
    info = members["big.bin"][1]
    assert info.mtime == int(artifact.created_at.timestamp())
    assert info.isfile()
    assert info.mode == 0o644
    # Padded to whole tar records, as tar itself writes archives.
    assert len(gzip.decompress(data)) % tarfile.RECORDSIZE == 0


def test_tar_gz_with_long_and_non_ascii_names(client: Client, playground: Playground) -> None:
    long_path = "/".join(["directory"] * 15) + "/fïlé.txt"
    artifact = stored_artifact(playground, {long_path: CONTENTS, "a": b"a"})

    members = tar_members(body(client.get(artifact_url(artifact, "?archive=tar.gz"))))

    assert members[long_path][0] == CONTENTS


def test_tar_gz_of_an_artifact_without_files(client: Client, playground: Playground) -> None:
    artifact = playground.create_artifact()
    assert tar_members(body(client.get(artifact_url(artifact, "?archive=tar.gz")))) == {}


def test_without_archive_a_single_file_artifact_is_the_file(
    client: Client, playground: Playground
) -> None:
    artifact = stored_artifact(playground, {"only.txt": CONTENTS})

    response = client.get(artifact_url(artifact))

    assert body(response) == CONTENTS
    assert response["Content-Disposition"] == 'attachment; filename="only.txt"'


def test_without_archive_a_single_incomplete_file_is_404(
    client: Client, playground: Playground
) -> None:
    artifact = playground.create_artifact(files=[FileSpec("f", CONTENTS)])
    assert client.get(artifact_url(artifact)).status_code == 404


def test_without_archive_several_files_make_a_tarball(client: Client, artifact: Artifact) -> None:
    response = client.get(artifact_url(artifact))
    assert sorted(tar_members(body(response))) == ["big.bin", "dir/hello world.txt"]


def test_unsupported_archive_format(client: Client, artifact: Artifact) -> None:
    assert client.get(artifact_url(artifact, "?archive=zip")).status_code == 400


def test_queries_do_not_grow_with_files(
    client: Client, playground: Playground, django_assert_max_num_queries: Any
) -> None:
    artifact = stored_artifact(
        playground, {f"file-{n}": f"contents {n}".encode() for n in range(30)}
    )

    url = artifact_url(artifact, "?archive=tar.gz")

    # Artifact, file rows, the scope's stores, the stores holding the files; and the
    # request's savepoint.
    with django_assert_max_num_queries(6):
        data = body(client.get(url))

    assert len(tar_members(data)) == 30


def test_file_download_queries(
    client: Client, artifact: Artifact, django_assert_max_num_queries: Any
) -> None:
    url = file_url(artifact, "big.bin")
    with django_assert_max_num_queries(6):
        assert body(client.get(url)) == BIG


def test_served_under_asgi_without_buffering(artifact: Artifact) -> None:
    async def fetch(url: str) -> tuple[Any, bytes]:
        response: Any = await AsyncClient().get(url)
        chunks = [chunk async for chunk in response.streaming_content]
        # An async iterator end to end: Django would otherwise list the whole body first.
        assert response.is_async
        return response, b"".join(chunks)

    response, data = async_to_sync(fetch)(file_url(artifact, "big.bin"))
    assert response.status_code == 200
    assert data == BIG

    response, data = async_to_sync(fetch)(artifact_url(artifact, "?archive=tar.gz"))
    assert sorted(tar_members(data)) == ["big.bin", "dir/hello world.txt"]


def test_x_accel_redirect_hands_local_store_downloads_to_nginx(
    client: Client, artifact: Artifact, settings: Any, directories: Path
) -> None:
    settings.DEBUSINE_X_ACCEL_REDIRECT_LOCATION = "/_debusine_store/"
    file = FileInArtifact.objects.get(artifact=artifact, path="big.bin").file
    response = client.get(file_url(artifact, "big.bin"), HTTP_RANGE="bytes=10-19")

    # nginx sends the file (and serves the range) from the internal location.
    assert response.status_code == 200
    assert response.content == b""
    entry = f"{file.hash_hex[:2]}/{file.hash_hex[2:4]}/{file.hash_hex[4:6]}"
    assert response["X-Accel-Redirect"] == (
        f"/_debusine_store/Default/{entry}/{file.hash_hex}-{len(BIG)}"
    )
    assert (directories / "store" / entry / f"{file.hash_hex}-{len(BIG)}").read_bytes() == BIG
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="big.bin"'


def test_x_accel_redirect_of_contents_gone_from_the_store_is_404(
    client: Client, artifact: Artifact, settings: Any, directories: Path
) -> None:
    settings.DEBUSINE_X_ACCEL_REDIRECT_LOCATION = "/_debusine_store"
    for path in (directories / "store").rglob("*"):
        if path.is_file():
            path.unlink()
    response = client.get(file_url(artifact, "big.bin"))
    assert response.status_code == 404
    assert "X-Accel-Redirect" not in response


def test_without_x_accel_location_the_server_streams(
    client: Client, artifact: Artifact, settings: Any
) -> None:
    settings.DEBUSINE_X_ACCEL_REDIRECT_LOCATION = ""
    response = client.get(file_url(artifact, "big.bin"))
    assert "X-Accel-Redirect" not in response
    assert body(response) == BIG


def test_tarballs_are_always_streamed(client: Client, artifact: Artifact, settings: Any) -> None:
    settings.DEBUSINE_X_ACCEL_REDIRECT_LOCATION = "/_debusine_store"
    response = client.get(artifact_url(artifact, "?archive=tar.gz"))
    assert "X-Accel-Redirect" not in response
    assert tar_members(body(response))["big.bin"][0] == BIG
