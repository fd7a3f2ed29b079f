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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import requests

MiB = 1024 * 1024
UNITS = {"": 1, "b": 1, "k": 1000, "kib": 1024, "m": 1000**2, "mib": MiB, "g": 1000**3}
UNITS |= {"gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}

POSTGRES_SERVER = "postgresql://127.0.0.1:5432"

SETUP_SCRIPT = """
import django
django.setup()
from debusine.server.testing import Playground
playground = Playground()
user = playground.create_user("bench")
playground.grant(user, playground.workspace)
print(playground.create_user_token(user))
"""


def parse_size(text: str) -> int:
    """`1GiB`, `50MiB`, `100M` or a number of bytes."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", text)
    if match is None or match[2].lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(match[1]) * UNITS[match[2].lower()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


@contextmanager
def throwaway_database() -> Iterator[str]:
    """Create an empty database; yield its URL; drop it at the end."""
    name = f"debusine_bench_{os.getpid()}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    pids = [pid]
    for parent in pids:
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                pids.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return pids


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


@contextmanager
def running_server(env: dict[str, str], workers: int, log: Path) -> Iterator[tuple[str, int]]:
    """Start gunicorn with uvicorn workers; yield its base URL and pid; stop it at the end."""
    port = free_port()
    gunicorn = Path(sys.executable).with_name("gunicorn")
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                str(gunicorn),
                "-k",
                "uvicorn.workers.UvicornWorker",
                "--workers",
                str(workers),
                "--bind",
                f"127.0.0.1:{port}",
                "--timeout",
                "600",
                "debusine.server.project.asgi:application",
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early, see {log}:\n{log.read_text()}")
            try:
                requests.get(f"{base}/api/1.0/", timeout=10)
                break
            except (requests.ConnectionError, requests.Timeout):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield base, process.pid
    except Exception:
        print(f"--- server log ({log}):\n{log.read_text()[-5000:]}", file=sys.stderr)
        raise
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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

    with throwaway_database() as database_url:
        env = dict(os.environ)
        env |= {
            "DEBUSINE_DATABASE_URL": database_url,
            "DEBUSINE_DATA_DIR": str(directory / "data"),
            "DJANGO_SETTINGS_MODULE": "debusine.server.project.settings",
            "DEBUSINE_LOG_LEVEL": "WARNING",
        }
        admin = Path(sys.executable).with_name("debusine-admin")
        subprocess.run([str(admin), "migrate", "-v", "0"], env=env, check=True)
        token = (
            subprocess.run(
                [sys.executable, "-c", SETUP_SCRIPT], env=env, check=True, capture_output=True
            )
            .stdout.decode()
            .strip()
        )
        with running_server(env, workers, directory / "server.log") as (base, pid):
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
