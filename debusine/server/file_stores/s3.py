"""
The S3 file store backend: contents as objects of one bucket of an S3-compatible service.

Configuration (validated by `validate_file_store_configuration`):

- `bucket_name` (required);
- `storage_class` (optional, e.g. `STANDARD_IA`), given to every upload;
- `endpoint_url`, `region_name` (optional): S3-compatible providers and regions;
- `access_key_id` + `secret_access_key` (optional): credentials; without them the store's
  `provider_account` asset (`debusine:cloud-provider-account`) supplies them, together with
  its `s3_endpoint_url` and `region_name`, and without either boto3's own lookup applies
  (environment, instance profile);
- `multipart_threshold`, `multipart_chunk_size` (optional, bytes): files at least as large as
  the threshold are uploaded in parts of the chunk size, streamed from disk;
- `connect_timeout`, `read_timeout` (optional, seconds) and `max_attempts` (optional): how long
  one request to the service may take and how often it is tried. A store that is down or
  too slow then fails an API request within a bounded time, with a retriable 503, instead of
  holding it for minutes.

Objects are named like Local entries (`aa/bb/cc/<sha256hex>-<size>`). Downloads are served
by redirecting clients to a presigned GET URL that is valid for `PRESIGNED_URL_SECONDS`.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from debusine.server.db.models import File, FileStore
from debusine.server.file_stores.base import (
    FileBackend,
    FileStoreError,
    FileStoreUnavailableError,
    StoreEntry,
    entry_name,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: How long a download redirect stays usable: long enough to start, short enough that a
#: leaked URL is soon worthless.
PRESIGNED_URL_SECONDS = 60

#: Largest object S3 copies in one request.
SINGLE_COPY_LIMIT = 5 * 1024**3

#: Multipart defaults: boto3's 8 MiB parts, and whole-object PUTs below 64 MiB.
DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
DEFAULT_MULTIPART_CHUNK_SIZE = 8 * 1024 * 1024

#: Time limits of one request to the service, and how often a request is tried (the defaults
#: of the store's `connect_timeout`, `read_timeout` and `max_attempts`): boto3's own (60 s
#: each, tried 5 times) would hold an upload request for minutes while a store is unreachable.
DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_READ_TIMEOUT = 30
DEFAULT_MAX_ATTEMPTS = 3

#: Errors that say the service is unreachable or slow, not that the request is wrong.
UNREACHABLE_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)
#: Error codes S3 answers when it is overloaded or failing for a while.
TRANSIENT_ERROR_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}
)

#: Creating a boto3 client costs tens of milliseconds; clients are thread-safe, so each
#: process keeps one per set of connection parameters.
_CLIENTS: dict[tuple[str | None, ...], S3Client] = {}
_CLIENTS_LOCK = threading.Lock()


def s3_connection_parameters(store: FileStore) -> dict[str, str | int | None]:
    """
    Endpoint, region and credentials for `store` (its configuration, else its account), and
    its time limits.
    """
    configuration = store.configuration
    account: dict[str, Any] = {}
    if store.provider_account is not None:
        account = store.provider_account.data or {}
    account_configuration = account.get("configuration") or {}
    account_credentials = account.get("credentials") or {}
    return {
        "endpoint_url": configuration.get("endpoint_url")
        or account_configuration.get("s3_endpoint_url"),
        "region_name": configuration.get("region_name")
        or account_configuration.get("region_name"),
        "aws_access_key_id": configuration.get("access_key_id")
        or account_credentials.get("access_key_id"),
        "aws_secret_access_key": configuration.get("secret_access_key")
        or account_credentials.get("secret_access_key"),
        "connect_timeout": configuration.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
        "read_timeout": configuration.get("read_timeout", DEFAULT_READ_TIMEOUT),
        "max_attempts": configuration.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
    }


def is_transient(error: Exception) -> bool:
    """Whether `error` says the service is down, slow or overloaded (worth retrying later)."""
    seen: set[int] = set()
    current: BaseException | None = error
    # boto3's transfer manager wraps what it met (S3UploadFailedError): look at the causes too.
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UNREACHABLE_ERRORS):
            return True
        if isinstance(current, ClientError):
            response = current.response
            code = str(response.get("Error", {}).get("Code", ""))
            status_code = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return code in TRANSIENT_ERROR_CODES or status_code >= 500
        current = current.__cause__ or current.__context__
    return False


def s3_client(parameters: dict[str, str | int | None]) -> S3Client:
    """The process's client for these connection parameters."""
    key = tuple(str(parameters[name]) for name in sorted(parameters))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            # Path-style addressing works with every S3-compatible service and with endpoints
            # given as IP addresses; signature v4 is what presigned URLs need everywhere.
            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"} if parameters["endpoint_url"] else {},
                retries={"max_attempts": int(str(parameters["max_attempts"])), "mode": "standard"},
                connect_timeout=int(str(parameters["connect_timeout"])),
                read_timeout=int(str(parameters["read_timeout"])),
            )

            def text(name: str) -> str | None:
                value = parameters[name]
                return None if value is None else str(value)

            client = boto3.session.Session().client(
                "s3",
                config=config,
                endpoint_url=text("endpoint_url"),
                region_name=text("region_name"),
                aws_access_key_id=text("aws_access_key_id"),
                aws_secret_access_key=text("aws_secret_access_key"),
            )
            _CLIENTS[key] = client
        return client


class StreamingBodyReader(io.RawIOBase):
    """A readable raw stream over a botocore StreamingBody (for `io.BufferedReader`)."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data: bytes = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class S3Backend(FileBackend):
    """Contents as objects of `bucket_name`."""

    def __init__(self, store: FileStore) -> None:
        super().__init__(store)
        bucket = store.configuration.get("bucket_name")
        if not bucket:
            raise FileStoreError(f"S3 file store {store.name!r} has no bucket_name")
        self.bucket: str = bucket
        self.storage_class: str | None = store.configuration.get("storage_class")
        self.client = s3_client(s3_connection_parameters(store))
        self.transfer_config = TransferConfig(
            multipart_threshold=int(
                store.configuration.get("multipart_threshold", DEFAULT_MULTIPART_THRESHOLD)
            ),
            multipart_chunksize=int(
                store.configuration.get("multipart_chunk_size", DEFAULT_MULTIPART_CHUNK_SIZE)
            ),
            max_concurrency=4,
        )

    def _failed(self, action: str, file_or_name: File | str, error: Exception) -> FileStoreError:
        message = f"S3 store {self.store.name!r}: cannot {action} {file_or_name}: {error}"
        if is_transient(error):
            return FileStoreUnavailableError(message)
        return FileStoreError(message)

    def put_contents(self, file: File, local_path: Path, *, move: bool = False) -> None:
        if self.has_contents(file):
            self._refresh(file)
        else:
            extra_args = {"StorageClass": self.storage_class} if self.storage_class else {}
            try:
                # Streams from disk; multipart (parts in parallel) above the threshold.
                self.client.upload_file(
                    str(local_path),
                    self.bucket,
                    entry_name(file),
                    ExtraArgs=extra_args,
                    Config=self.transfer_config,
                )
            except (BotoCoreError, ClientError, boto3.exceptions.S3UploadFailedError) as error:
                raise self._failed("upload", file, error) from error
        if move:
            local_path.unlink(missing_ok=True)

    def _refresh(self, file: File) -> None:
        """
        Make an object stored again young (a copy onto itself updates its LastModified), so
        that the vacuum pass, which deletes only unknown objects older than a day, cannot take
        it for an orphan before the database row of this upload commits. Objects above the
        5 GiB limit of a single copy keep their date; the vacuum's last check covers them.
        """
        if file.size > SINGLE_COPY_LIMIT:
            return
        key = entry_name(file)
        arguments: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "CopySource": {"Bucket": self.bucket, "Key": key},
            "MetadataDirective": "REPLACE",
        }
        if self.storage_class:
            arguments["StorageClass"] = self.storage_class
        try:
            self.client.copy_object(**arguments)
        except (BotoCoreError, ClientError) as error:
            raise self._failed("refresh", file, error) from error

    def has_contents(self, file: File) -> bool:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=entry_name(file))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._failed("check", file, error) from error
        except BotoCoreError as error:
            raise self._failed("check", file, error) from error
        # An object of the wrong size is not the file: never count it as a copy.
        return head["ContentLength"] == file.size

    def open_contents(
        self, file: File, offset: int = 0, length: int | None = None
    ) -> io.BufferedIOBase:
        if length == 0:
            return io.BytesIO(b"")
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": entry_name(file)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            arguments["Range"] = f"bytes={offset}-{end}"
        try:
            response = self.client.get_object(**arguments)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileStoreError(
                    f"{file} is missing from store {self.store.name!r}"
                ) from error
            raise self._failed("read", file, error) from error
        except BotoCoreError as error:
            raise self._failed("read", file, error) from error
        return io.BufferedReader(StreamingBodyReader(response["Body"]), 1024 * 1024)

    def remove_contents(self, file: File) -> None:
        self.remove_entry(entry_name(file))

    def remove_entry(self, name: str) -> None:
        try:
            # Deleting a missing key succeeds in S3: missing contents are not an error.
            self.client.delete_object(Bucket=self.bucket, Key=name)
        except (BotoCoreError, ClientError) as error:
            raise self._failed("delete", name, error) from error

    def list_entries(self) -> Iterator[StoreEntry]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket):
                for item in page.get("Contents", []):
                    yield StoreEntry(
                        name=item["Key"], size=item["Size"], modified_at=item["LastModified"]
                    )
        except (BotoCoreError, ClientError) as error:
            raise self._failed("list", f"bucket {self.bucket}", error) from error

    def redirect_url(self, file: File) -> str | None:
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": entry_name(file)},
            ExpiresIn=PRESIGNED_URL_SECONDS,
        )
