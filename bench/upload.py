"""
Upload and download throughput of one big file through the API, next to a plain disk copy.

Starts its own server (gunicorn with uvicorn workers) on a free port, against a throwaway
PostgreSQL database it creates, migrates and drops, with its data directory in a temporary
directory. Then, in the same run and on the same disk:

- copy: `shutil.copyfile` of the test file plus fsync (what any upload is compared to);
- upload with our client (`DebusineClient.upload_artifact_files`: probe, then 50 MiB
  `Content-Range` chunks), ending with the server verifying the SHA-256 and moving the file
  into the local store; the client's hashing of the file before it creates the artifact is
  timed apart (`hash`);
- download with our client (`DebusineClient.download_file`, which checks size and SHA-256
  while it writes), plus fsync;
- the same with Debian's `debusine` client 0.11.3 (fetched as the compatibility tests do; not
  with `--no-debian`): `debusine create-artifact --upload` (its whole run: start-up, hashing,
  creation, upload) and `debusine download-artifact`, plus fsync.

Then, unless `--no-s3`, the same against an S3 store (a `moto_server` on loopback, with the
store added to the scope at the highest upload and download priorities), next to boto3 used
directly against the same moto server:

- S3 upload (API): the same chunked protocol, ending with the server verifying the SHA-256
  and uploading the file to the bucket (multipart, as the S3 backend does);
- S3 download (API): `GET files[path].url`, which redirects to a presigned URL of the
  object, streamed to a local file, plus fsync;
- boto3 upload / download, measured first: `upload_file` of the same file to the same
  bucket with the backend's transfer settings, and one streamed `get_object` of it (what a
  client following the presigned URL does), plus fsync; the object is then deleted so that
  the API meets the same moto state.

Targets (issue 16): our client's upload and download >= 0.6 x copy.

Usage: `.venv/bin/python -m bench.upload [--size 1GiB] [--chunk-size 50MiB] [--workers 2]
[--no-s3] [--no-debian]`
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.common import cpu_seconds, process_tree
from debusine.client.client import DebusineClient, LocalFile
from debusine.testing.reference_client import reference_client
from debusine.testing.throwaway import ThrowawayInstance, throwaway_instance

MiB = 1024 * 1024
UNITS = {"": 1, "b": 1, "k": 1000, "kib": 1024, "m": 1000**2, "mib": MiB, "g": 1000**3}
UNITS |= {"gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")


def parse_size(text: str) -> int:
    """`1GiB`, `50MiB`, `100M` or a number of bytes."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", text)
    if match is None or match[2].lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(match[1]) * UNITS[match[2].lower()]


def fsync_file(path: Path) -> None:
    """Flush `path` to disk (the copy baseline pays what the server pays)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_test_file(path: Path, size: int) -> str:
    """Write `size` random bytes; return their SHA-256 (hex)."""
    hasher = hashlib.sha256()
    block = os.urandom(MiB)
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            # Varying blocks so that no layer can deduplicate or compress them away.
            piece = hashlib.sha256(block[:64] + remaining.to_bytes(8, "big")).digest() + block
            piece = piece[: min(MiB, remaining)]
            handle.write(piece)
            hasher.update(piece)
            remaining -= len(piece)
    fsync_file(path)
    return hasher.hexdigest()


def peak_rss_mib(pid: int) -> float:
    """The largest peak resident set size among `pid`'s process tree, in MiB."""
    peak = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        if match := re.search(r"^VmHWM:\s+([0-9]+) kB", status, re.MULTILINE):
            peak = max(peak, int(match[1]))
    return peak / 1024


@dataclass
class Timings:
    copy: float
    hash: float
    upload: float
    download: float
    debian_upload: float | None = None
    debian_download: float | None = None
    #: CPU seconds the server (gunicorn tree) used during each transfer, by row name.
    server_cpu: dict[str, float] = field(default_factory=dict)


@dataclass
class S3Timings:
    """Seconds taken through the API, and by boto3 directly, against one moto server."""

    api_upload: float
    api_download: float
    boto3_upload: float
    boto3_download: float


def upload(session: requests.Session, url: str, path: Path, size: int, chunk_size: int) -> None:
    """The client's protocol: probe, then chunks from the offset the server reports."""
    probe = session.put(url, headers={"Content-Range": f"bytes */{size}"})
    if probe.status_code != 206:
        raise RuntimeError(f"probe: {probe.status_code} {probe.text}")
    offset = int(probe.headers["Range"].rsplit("-", 1)[1])
    with open(path, "rb") as handle:
        handle.seek(offset)
        while offset < size:
            chunk = handle.read(chunk_size)
            end = offset + len(chunk) - 1
            response = session.put(
                url, data=chunk, headers={"Content-Range": f"bytes {offset}-{end}/{size}"}
            )
            expected = 201 if end + 1 == size else 200
            if response.status_code != expected:
                raise RuntimeError(f"chunk at {offset}: {response.status_code} {response.text}")
            offset = end + 1


def download(session: requests.Session, url: str, destination: Path) -> None:
    """Stream `url` (following redirects, as to an S3 presigned URL) to `destination`."""
    with session.get(url, stream=True) as response:
        response.raise_for_status()
        with open(destination, "wb") as handle:
            for piece in response.iter_content(MiB):
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())


def create_artifact(
    session: requests.Session, base: str, path: str, size: int, sha256: str
) -> dict[str, object]:
    """Create a `debusine:test` artifact announcing one file; return the Artifact object."""
    created = session.post(
        f"{base}/api/1.0/artifact/",
        json={
            "category": "debusine:test",
            "workspace": "System",
            "files": {path: {"size": size, "checksums": {"sha256": sha256}, "type": "file"}},
            "data": {},
        },
    )
    if created.status_code != 201:
        raise RuntimeError(f"artifact create: {created.status_code} {created.text}")
    artifact: dict[str, object] = created.json()
    return artifact


def check_sha256(path: Path, sha256: str) -> None:
    with open(path, "rb") as handle:
        if hashlib.file_digest(handle, "sha256").hexdigest() != sha256:
            raise RuntimeError(f"{path.name} differs from the uploaded file")


def client_upload(
    server: ThrowawayInstance, token: str, source: Path, chunk_size: int
) -> tuple[int, float, float]:
    """Create an artifact and upload `source` with our client; (id, hash s, upload s)."""
    client = DebusineClient(server.api_url, token, "debusine")
    client.upload_chunk_size = chunk_size
    start = time.perf_counter()
    local = LocalFile.from_path(source)
    hash_seconds = time.perf_counter() - start
    artifact = client.artifact_create(
        "debusine:test", {source.name: local}, {}, workspace="System"
    )
    start = time.perf_counter()
    client.upload_artifact_files(artifact, {source.name: local})
    return artifact.id, hash_seconds, time.perf_counter() - start


def client_download(
    server: ThrowawayInstance, token: str, artifact_id: int, name: str, destination: Path
) -> float:
    """Download the file with our client (size and SHA-256 checked), plus fsync."""
    client = DebusineClient(server.api_url, token, "debusine")
    artifact = client.artifact_get(artifact_id)
    start = time.perf_counter()
    client.download_file(name, artifact.files[name], destination)
    fsync_file(destination)
    return time.perf_counter() - start


def debian_client_home(directory: Path, api_url: str, token: str) -> Path:
    """A HOME with the Debian client's configuration for our server."""
    home = directory / "debian-home"
    config = home / ".config" / "debusine" / "client" / "config.ini"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "[General]\ndefault-server = bench\n\n"
        f"[server:bench]\napi-url = {api_url}\nscope = debusine\ntoken = {token}\n"
    )
    return home


def debian_transfers(
    server: ThrowawayInstance, token: str, source: Path, directory: Path
) -> tuple[float, float]:
    """Upload then download `source` with Debian's 0.11.3 `debusine` CLI; seconds of each."""
    cli = reference_client()
    home = debian_client_home(directory, server.api_url, token)
    start = time.perf_counter()
    created = cli.run(
        "create-artifact",
        "debusine:test",
        "--workspace",
        "System",
        "--upload-base-directory",
        str(source.parent),
        "--upload",
        source.name,
        home=home,
        timeout=3600,
    )
    upload_seconds = time.perf_counter() - start
    if created.returncode != 0:
        raise RuntimeError(f"Debian client upload failed:\n{created.stdout}\n{created.stderr}")
    match = re.search(r"^artifact_id: *([0-9]+)$", created.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no artifact id in the Debian client's output:\n{created.stdout}")
    target = directory / "debian-download"
    target.mkdir()
    start = time.perf_counter()
    downloaded = cli.run(
        "download-artifact",
        match[1],
        "--target-directory",
        str(target),
        home=home,
        timeout=3600,
    )
    if downloaded.returncode != 0:
        raise RuntimeError(f"Debian client download failed:\n{downloaded.stderr}")
    fsync_file(target / source.name)
    download_seconds = time.perf_counter() - start
    shutil.rmtree(target)
    return upload_seconds, download_seconds


def run(
    size: int, chunk_size: int, workers: int, directory: Path, *, s3: bool, debian: bool
) -> tuple[Timings, S3Timings | None, float]:
    source = directory / "bench.bin"
    sha256 = write_test_file(source, size)

    start = time.perf_counter()
    shutil.copyfile(source, directory / "copy.bin")
    fsync_file(directory / "copy.bin")
    copy_seconds = time.perf_counter() - start
    (directory / "copy.bin").unlink()

    data_dir = directory / "data"
    data_dir.mkdir()
    with throwaway_instance(
        postgres_url=POSTGRES_URL,
        redis_url=REDIS_URL,
        data_dir=data_dir,
        name_prefix="debusine_bench_upload",
        workers=workers,
    ) as server:
        token = server.create_contributor("bench")
        pid = server.pid
        session = requests.Session()
        session.headers["Token"] = token

        cpu = {"start": cpu_seconds(pid)}
        artifact_id, hash_seconds, upload_seconds = client_upload(
            server, token, source, chunk_size
        )
        cpu["upload"] = cpu_seconds(pid)
        downloaded = directory / "downloaded.bin"
        download_seconds = client_download(server, token, artifact_id, source.name, downloaded)
        cpu["download"] = cpu_seconds(pid)
        check_sha256(downloaded, sha256)
        downloaded.unlink()
        timings = Timings(copy_seconds, hash_seconds, upload_seconds, download_seconds)
        timings.server_cpu["upload (our client)"] = cpu["upload"] - cpu["start"]
        timings.server_cpu["download (our client)"] = cpu["download"] - cpu["upload"]

        if debian:
            # Other contents of the same size, so that the server stores them too (it would
            # only hash and drop contents the scope already has).
            source.unlink()
            other = directory / "debian" / source.name
            other.parent.mkdir()
            write_test_file(other, size)
            timings.debian_upload, timings.debian_download = debian_transfers(
                server, token, other, directory
            )
            timings.server_cpu["Debian 0.11.3 (upload + download)"] = (
                cpu_seconds(pid) - cpu["download"]
            )
            other.unlink()

        s3_timings = None
        if s3:
            source.unlink(missing_ok=True)  # only one test file on disk at a time
            s3_timings = run_s3(server, session, size, chunk_size, directory)
        server_peak = peak_rss_mib(pid)
    return timings, s3_timings, server_peak


def file_url(artifact: dict[str, object], path: str) -> str:
    files = artifact["files"]
    assert isinstance(files, dict)
    url: str = files[path]["url"]
    return url


def run_s3(
    server: ThrowawayInstance,
    session: requests.Session,
    size: int,
    chunk_size: int,
    directory: Path,
) -> S3Timings:
    """Upload and download through an S3 store of the scope, then with boto3 directly."""
    # The moto helper and the backend's transfer settings live in a package that loads the
    # models: configure Django as the instance's processes are (nothing here queries).
    os.environ.update(server.environment)
    import django

    django.setup()
    from boto3.s3.transfer import TransferConfig

    from debusine.server.file_stores.s3 import (
        DEFAULT_MULTIPART_CHUNK_SIZE,
        DEFAULT_MULTIPART_THRESHOLD,
    )
    from debusine.testing.moto import MotoS3Server

    base = server.base_url
    with MotoS3Server() as moto:
        bucket = moto.new_bucket()
        configuration = directory / "s3-store.json"
        configuration.write_text(json.dumps(moto.store_configuration(bucket)))
        server.admin(
            "file_store", "create", "bench-s3", "S3", "--configuration", str(configuration)
        )
        server.admin(
            "scope", "add_file_store", "debusine", "bench-s3",
            "--upload-priority", "100", "--download-priority", "100",
        )  # fmt: skip

        # New contents: the first file is already complete in this workspace.
        source = directory / "source-s3.bin"
        sha256 = write_test_file(source, size)
        downloaded = directory / "downloaded-s3.bin"
        client = moto.client()

        # boto3 first, on an empty bucket; its object is deleted afterwards, so that the API
        # meets the same moto state. Uploads use the backend's transfer settings; downloads
        # are one streamed GET, as a client following the API's presigned URL makes
        # (download_file's parallel ranged GETs are far slower against moto).
        transfer = TransferConfig(
            multipart_threshold=DEFAULT_MULTIPART_THRESHOLD,
            multipart_chunksize=DEFAULT_MULTIPART_CHUNK_SIZE,
            max_concurrency=4,
        )
        start = time.perf_counter()
        client.upload_file(str(source), bucket, "direct/source.bin", Config=transfer)
        boto3_upload = time.perf_counter() - start
        start = time.perf_counter()
        body = client.get_object(Bucket=bucket, Key="direct/source.bin")["Body"]
        with open(downloaded, "wb") as handle:
            for piece in body.iter_chunks(MiB):
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        boto3_download = time.perf_counter() - start
        check_sha256(downloaded, sha256)
        downloaded.unlink()
        client.delete_object(Bucket=bucket, Key="direct/source.bin")

        artifact = create_artifact(session, base, "bench-s3.bin", size, sha256)
        start = time.perf_counter()
        upload(
            session,
            f"{base}/api/1.0/artifact/{artifact['id']}/files/bench-s3.bin/",
            source,
            size,
            chunk_size,
        )
        api_upload = time.perf_counter() - start
        key = f"{sha256[0:2]}/{sha256[2:4]}/{sha256[4:6]}/{sha256}-{size}"
        if client.head_object(Bucket=bucket, Key=key)["ContentLength"] != size:
            raise RuntimeError("the file did not reach the S3 store")

        # The API must hand S3 downloads to the object store, not stream them itself.
        redirect = session.get(file_url(artifact, "bench-s3.bin"), allow_redirects=False)
        if not redirect.is_redirect or not redirect.headers["Location"].startswith(
            moto.endpoint_url
        ):
            raise RuntimeError(f"S3 download not redirected: {redirect.status_code}")
        start = time.perf_counter()
        download(session, file_url(artifact, "bench-s3.bin"), downloaded)
        api_download = time.perf_counter() - start
        check_sha256(downloaded, sha256)
    return S3Timings(api_upload, api_download, boto3_upload, boto3_download)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--chunk-size", type=parse_size, default=parse_size("50MiB"))
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--directory", type=Path, default=None, help="where to work (a temp dir)")
    parser.add_argument(
        "--s3",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure an S3 store (moto) against boto3 used directly (default: yes)",
    )
    parser.add_argument(
        "--debian",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure Debian's debusine client 0.11.3 (default: yes)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="debusine-bench-", dir=args.directory) as work:
        timings, s3_timings, server_peak = run(
            args.size, args.chunk_size, args.workers, Path(work), s3=args.s3, debian=args.debian
        )

    mib = args.size / MiB
    copy_rate = mib / timings.copy
    print(
        f"file: {mib:.0f} MiB, chunks of {args.chunk_size / MiB:.0f} MiB, {args.workers} workers"
    )
    print(f"copy (copyfile + fsync): {copy_rate:8.1f} MiB/s  ({timings.copy:.2f} s)")
    rows = [
        ("hash (our client)", timings.hash),
        ("upload (our client)", timings.upload),
        ("download (our client)", timings.download),
        ("upload (Debian 0.11.3)", timings.debian_upload),
        ("download (Debian 0.11.3)", timings.debian_download),
    ]
    for name, seconds in rows:
        if seconds is None:
            continue
        rate = mib / seconds
        print(f"{name:24} {rate:8.1f} MiB/s  ({seconds:.2f} s)  = {rate / copy_rate:.2f} x copy")
    if s3_timings is not None:
        for name, api_seconds, boto3_seconds in [
            ("upload", s3_timings.api_upload, s3_timings.boto3_upload),
            ("download", s3_timings.api_download, s3_timings.boto3_download),
        ]:
            boto3_rate = mib / boto3_seconds
            api_rate = mib / api_seconds
            print(
                f"{'S3 ' + name + ' (boto3)':24} {boto3_rate:8.1f} MiB/s  ({boto3_seconds:.2f} s)"
            )
            print(
                f"{'S3 ' + name + ' (API)':24} {api_rate:8.1f} MiB/s  ({api_seconds:.2f} s)  "
                f"= {api_rate / boto3_rate:.2f} x boto3"
            )
    for name, seconds in timings.server_cpu.items():
        print(f"server CPU, {name}: {seconds:.2f} s ({seconds / (mib / 1024):.2f} s per GiB)")
    print(f"server peak RSS (largest process): {server_peak:.0f} MiB")


if __name__ == "__main__":
    main()
