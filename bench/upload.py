"""
Upload and download throughput of one big file through the API, next to a plain disk copy.

Starts its own server (gunicorn with uvicorn workers) on a free port, against a throwaway
PostgreSQL database it creates, migrates and drops, with its data directory in a temporary
directory. Then, in the same run and on the same disk:

- copy: `shutil.copyfile` of the test file plus fsync (the floor any upload is compared to);
- upload: the client's real protocol (probe, then 50 MiB `Content-Range` chunks), ending
  with the server verifying the SHA-256 and moving the file into the local store;
- download: `GET files[path].url` streamed to a local file, plus fsync.

Usage: `.venv/bin/python -m bench.upload [--size 1GiB] [--chunk-size 50MiB] [--workers 2]`
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.common import process_tree
from debusine.server.throwaway import throwaway_instance

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
    upload: float
    download: float


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
    with session.get(url, stream=True) as response:
        response.raise_for_status()
        with open(destination, "wb") as handle:
            for piece in response.iter_content(MiB):
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())


def run(size: int, chunk_size: int, workers: int, directory: Path) -> tuple[Timings, float]:
    source = directory / "source.bin"
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
        base, pid = server.base_url, server.pid
        session = requests.Session()
        session.headers["Token"] = token
        created = session.post(
            f"{base}/api/1.0/artifact/",
            json={
                "category": "debusine:test",
                "workspace": "System",
                "files": {
                    "bench.bin": {
                        "size": size,
                        "checksums": {"sha256": sha256},
                        "type": "file",
                    }
                },
                "data": {},
            },
        )
        if created.status_code != 201:
            raise RuntimeError(f"artifact create: {created.status_code} {created.text}")
        artifact = created.json()
        upload_url = f"{base}/api/1.0/artifact/{artifact['id']}/files/bench.bin/"

        start = time.perf_counter()
        upload(session, upload_url, source, size, chunk_size)
        upload_seconds = time.perf_counter() - start

        downloaded = directory / "downloaded.bin"
        start = time.perf_counter()
        download(session, artifact["files"]["bench.bin"]["url"], downloaded)
        download_seconds = time.perf_counter() - start
        server_peak = peak_rss_mib(pid)

        with open(downloaded, "rb") as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() != sha256:
                raise RuntimeError("the downloaded file differs from the uploaded one")
    return Timings(copy_seconds, upload_seconds, download_seconds), server_peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--chunk-size", type=parse_size, default=parse_size("50MiB"))
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--directory", type=Path, default=None, help="where to work (a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="debusine-bench-", dir=args.directory) as work:
        timings, server_peak = run(args.size, args.chunk_size, args.workers, Path(work))

    mib = args.size / MiB
    copy_rate = mib / timings.copy
    print(
        f"file: {mib:.0f} MiB, chunks of {args.chunk_size / MiB:.0f} MiB, {args.workers} workers"
    )
    print(f"copy (copyfile + fsync): {copy_rate:8.1f} MiB/s  ({timings.copy:.2f} s)")
    for name, seconds in [("upload", timings.upload), ("download", timings.download)]:
        rate = mib / seconds
        print(
            f"{name + ' (API)':24} {rate:8.1f} MiB/s  ({seconds:.2f} s)  "
            f"= {rate / copy_rate:.2f} x copy"
        )
    print(f"server peak RSS (largest process): {server_peak:.0f} MiB")


if __name__ == "__main__":
    main()
