"""The S3 backend against a moto S3 server: multipart uploads, credentials, redirects."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from debusine.server.db.models import (
    Asset,
    AssetCategory,
    File,
    FileInArtifact,
    FileInStore,
    FileStore,
    User,
)
from debusine.server.file_stores import get_backend
from debusine.server.file_stores.base import entry_name
from debusine.server.file_stores.s3 import S3Backend
from debusine.testing.moto import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoS3Server
from debusine.testing.playground import FileSpec, Playground, api_client

MIB = 1024 * 1024


def make_file(contents: bytes) -> File:
    return File.objects.get_or_create_by_hash(hashlib.sha256(contents).digest(), len(contents))


def s3_store(
    playground: Playground, moto_s3: MotoS3Server, name: str = "s3", **options: Any
) -> FileStore:
    extra = options.pop("configuration", {})
    return playground.create_file_store(
        name,
        backend="S3",
        configuration=moto_s3.store_configuration(moto_s3.new_bucket(), **extra),
        **options,
    )


def test_large_files_are_uploaded_in_parts(
    playground: Playground, moto_s3: MotoS3Server, tmp_path: Path
) -> None:
    store = s3_store(
        playground,
        moto_s3,
        configuration={"multipart_threshold": 5 * MIB, "multipart_chunk_size": 5 * MIB},
    )
    contents = os.urandom(11 * MIB + 7)
    source = tmp_path / "big"
    source.write_bytes(contents)
    file = make_file(contents)

    get_backend(store).add_file(file, source, move=True)

    head = moto_s3.client().head_object(
        Bucket=store.configuration["bucket_name"], Key=entry_name(file)
    )
    # A multipart object's ETag ends with the number of parts.
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == len(contents)
    with get_backend(store).open_contents(file, 5 * MIB, 10) as reader:
        assert reader.read() == contents[5 * MIB : 5 * MIB + 10]
    assert not source.exists()


def test_small_files_are_one_put_with_the_storage_class(
    playground: Playground, moto_s3: MotoS3Server, tmp_path: Path
) -> None:
    store = s3_store(playground, moto_s3, configuration={"storage_class": "STANDARD_IA"})
    source = tmp_path / "small"
    source.write_bytes(b"small")
    file = make_file(b"small")

    get_backend(store).add_file(file, source)

    head = moto_s3.client().head_object(
        Bucket=store.configuration["bucket_name"], Key=entry_name(file)
    )
    assert "-" not in head["ETag"]
    assert head["StorageClass"] == "STANDARD_IA"


def test_storing_an_existing_object_again_makes_it_young(
    playground: Playground, moto_s3: MotoS3Server, tmp_path: Path
) -> None:
    store = s3_store(playground, moto_s3, configuration={"storage_class": "STANDARD_IA"})
    backend = get_backend(store)
    file = make_file(b"again")
    for name in ("first", "second"):
        source = tmp_path / name
        source.write_bytes(b"again")
        backend.put_contents(file, source, move=True)
        head = moto_s3.client().head_object(
            Bucket=store.configuration["bucket_name"], Key=entry_name(file)
        )
        if name == "first":
            first_modified = head["LastModified"]
            time.sleep(1.1)  # S3 dates have one-second resolution

    assert head["LastModified"] > first_modified
    assert head["StorageClass"] == "STANDARD_IA"
    with backend.open_contents(file) as reader:
        assert reader.read() == b"again"


def test_credentials_from_a_cloud_provider_account(
    playground: Playground, moto_s3: MotoS3Server, tmp_path: Path
) -> None:
    account = Asset.objects.create(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
        data={
            "provider_type": "aws",
            "name": "moto",
            "configuration": {"region_name": REGION, "s3_endpoint_url": moto_s3.endpoint_url},
            "credentials": {
                "access_key_id": ACCESS_KEY_ID,
                "secret_access_key": SECRET_ACCESS_KEY,
            },
        },
    )
    bucket = moto_s3.new_bucket()
    store = FileStore(name="account", backend="S3", configuration={"bucket_name": bucket})
    store.provider_account = account
    store.full_clean()
    store.save()
    source = tmp_path / "contents"
    source.write_bytes(b"via the account")

    get_backend(store).add_file(make_file(b"via the account"), source)

    keys = [item["Key"] for item in moto_s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [entry_name(make_file(b"via the account"))]


@pytest.mark.parametrize(
    ("configuration", "message"),
    [
        ({}, "bucket_name"),
        ({"bucket_name": "b", "access_key_id": "k"}, "secret_access_key"),
        ({"bucket_name": "b", "multipart_chunk_size": 1024}, "at least"),
        ({"bucket_name": "b", "storage_class": 3}, "storage_class must be a string"),
        ({"bucket_name": "b", "path": "/x"}, "unknown keys"),
        ({"bucket_name": "b", "read_timeout": 0}, "read_timeout must be at least 1"),
        ({"bucket_name": "b", "max_attempts": "3"}, "max_attempts must be a number"),
    ],
)
def test_invalid_s3_configuration(
    playground: Playground, configuration: dict[str, Any], message: str
) -> None:
    store = FileStore(name="bad", backend="S3", configuration=configuration)
    with pytest.raises(ValidationError, match=message):
        store.full_clean()


def test_provider_account_must_be_a_cloud_provider_account(playground: Playground) -> None:
    key = Asset.objects.create(category=AssetCategory.SIGNING_KEY, data={})
    store = FileStore(name="bad", backend="S3", configuration={"bucket_name": "b"})
    store.provider_account = key
    with pytest.raises(ValidationError, match="cloud-provider-account"):
        store.full_clean()


@pytest.fixture
def s3_first(playground: Playground, moto_s3: MotoS3Server, file_directories: Path) -> S3Backend:
    """The default scope uploads to and downloads from an S3 store first."""
    store = s3_store(playground, moto_s3, upload_priority=10, download_priority=10)
    backend = get_backend(store)
    assert isinstance(backend, S3Backend)
    return backend


def test_api_upload_lands_in_s3_and_download_redirects(
    playground: Playground, user: User, user_token: str, s3_first: S3Backend
) -> None:
    contents = os.urandom(300 * 1024)
    artifact = playground.create_artifact(files=[FileSpec("data.bin", contents)])
    client: APIClient = api_client(user_token)

    response = client.put(
        f"/api/1.0/artifact/{artifact.pk}/files/data.bin/",
        contents,
        content_type="application/octet-stream",
    )

    assert response.status_code == 201, response.content
    file = FileInArtifact.objects.get(artifact=artifact).file
    assert list(FileInStore.objects.filter(file=file).values_list("store", flat=True)) == [
        s3_first.store.pk
    ]
    workspace = artifact.workspace
    download = Client().get(
        f"/{workspace.scope.name}/{workspace.name}/artifact/{artifact.pk}/download/data.bin"
    )
    assert download.status_code == 302
    location = download["Location"]
    assert location.startswith(s3_first.store.configuration["endpoint_url"])
    assert "X-Amz-Expires=60" in location
    # The presigned URL works on its own, ranges included.
    assert requests.get(location, timeout=10).content == contents
    partial = requests.get(location, headers={"Range": "bytes=10-19"}, timeout=10)
    assert partial.status_code == 206
    assert partial.content == contents[10:20]


def test_tarball_streams_s3_contents(playground: Playground, s3_first: S3Backend) -> None:
    files = {"a.txt": b"first file\n", "b/c.bin": os.urandom(2 * MIB + 1)}
    artifact = playground.create_artifact(
        files=[FileSpec(path, data) for path, data in files.items()], complete=True
    )
    for data in files.values():
        playground.store_contents(data, s3_first.store)
    workspace = artifact.workspace

    response = Client().get(
        f"/{workspace.scope.name}/{workspace.name}/artifact/{artifact.pk}/download/?archive=tar.gz"
    )

    assert response.status_code == 200
    data = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as archive:
        found = {}
        for info in archive.getmembers():
            extracted = archive.extractfile(info)
            assert extracted is not None
            found[info.name] = extracted.read()
    assert found == files
