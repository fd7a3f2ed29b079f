"""
Requests per second through the shipped nginx virtual host against the server directly.

Starts a throwaway server (gunicorn with uvicorn workers on a loopback port, `(2 x cores) + 1`
workers by default) and a private nginx (Debian's, `apt-get install nginx`) running
`deploy/nginx/debusine-server.conf` with a self-signed certificate, its upstream pointed at
that port and its X-Accel-Redirect location at the server's local store. Then, from client
threads over keep-alive connections, it measures:

- `GET /api/1.0/whoami/` and `GET /api/1.0/work-request/<id>/`: plain HTTP to gunicorn, then
  HTTPS through nginx;
- downloading one artifact file (`--size`, default 8 MiB): streamed by the server directly,
  streamed by the server through nginx, and sent by nginx itself (the server answers with
  `X-Accel-Redirect`, DEBUSINE_X_ACCEL_REDIRECT_LOCATION set on a second server instance).

For each it prints requests per second, p50/p99 latency and the server's CPU time per request
(nginx's is not counted: it is what the X-Accel rows move off the server).

Usage: `.venv/bin/python -m bench.nginx [--requests 1000] [--threads 4] [--size 8MiB]`
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from bench.common import cpu_seconds
from debusine.testing.processes import free_port
from debusine.testing.throwaway import ThrowawayInstance, throwaway_instance

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEBUSINE_REDIS_URL", "redis://127.0.0.1:6379/0")
VHOST = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "debusine-server.conf"
MiB = 1024 * 1024
ACCEL_LOCATION = "/_debusine_store"


@dataclass
class Row:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    server_cpu: float

    def line(self) -> str:
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"{self.name:44} {self.requests / self.seconds:8.1f} req/s   "
            f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   "
            f"server {self.server_cpu / self.requests * 1000:6.2f} CPU-ms/req"
        )


def measure(
    name: str,
    server_pid: int,
    session_factory: Callable[[], requests.Session],
    url: str,
    total: int,
    threads: int,
    expected: bytes | None = None,
) -> Row:
    """GET `url` `total` times from `threads` threads (one keep-alive session each)."""
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [total]
    failures: list[str] = []

    def work() -> None:
        session = session_factory()
        mine = []
        while True:
            with lock:
                if remaining[0] == 0 or failures:
                    break
                remaining[0] -= 1
            start = time.perf_counter()
            try:
                # verify given on each call: a session's own is overridden by
                # REQUESTS_CA_BUNDLE from the environment.
                response = session.get(url, verify=session.verify)
            except requests.RequestException as exc:
                failures.append(repr(exc))
                break
            body = response.content
            mine.append(time.perf_counter() - start)
            if response.status_code != 200 or (expected is not None and body != expected):
                failures.append(f"{response.status_code} {len(body)} bytes {body[:200]!r}")
        with lock:
            latencies.extend(mine)

    cpu_before = cpu_seconds(server_pid)
    start = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{name}: {failures[0]}")
    return Row(name, len(latencies), elapsed, latencies, cpu_seconds(server_pid) - cpu_before)


def certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def nginx(directory: Path, upstreams: dict[str, int], store: Path) -> Iterator[dict[str, int]]:
    """The shipped vhost, once per upstream port, each on a port of its own (name -> port)."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        raise SystemExit("nginx is not installed (apt-get install nginx)")
    cert, key = certificate(directory)
    ports = {name: free_port() for name in upstreams}
    vhosts = []
    for name, upstream in upstreams.items():
        text = (
            VHOST.read_text()
            .replace("server unix:/run/debusine/server.sock", f"server 127.0.0.1:{upstream}")
            .replace("upstream debusine_server", f"upstream debusine_{name}")
            .replace("http://debusine_server", f"http://debusine_{name}")
            .replace("listen 443 ssl http2;", f"listen 127.0.0.1:{ports[name]} ssl;")
            .replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
            .replace("listen [::]:443 ssl http2;", "")
            .replace("listen [::]:80;", "")
            .replace("/etc/ssl/certs/ssl-cert-snakeoil.pem", str(cert))
            .replace("/etc/ssl/private/ssl-cert-snakeoil.key", str(key))
            .replace("/var/log/nginx/debusine-server.", f"{directory}/{name}.")
            .replace("/var/lib/debusine/server/store/", f"{store}/")
            .replace("shared:debusine:10m", f"shared:debusine_{name}:10m")
        )
        if name != "direct":
            # One `map` for the whole http block.
            text = text.replace(
                "map $http_upgrade $debusine_connection_upgrade",
                "map $http_upgrade $unused_" + name,
            )
        vhosts.append(text)
    config = directory / "nginx.conf"
    config.write_text(
        f"worker_processes auto;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n access_log off;\n client_body_temp_path {directory}/body;\n"
        f" proxy_temp_path {directory}/proxy;\n" + "\n".join(vhosts) + "\n}\n"
    )
    process = subprocess.Popen(
        ["/usr/sbin/nginx", "-p", str(directory), "-c", str(config), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not all(_answers(port) for port in ports.values()):
            if process.poll() is not None or time.monotonic() > deadline:
                assert process.stderr is not None
                raise RuntimeError(f"nginx did not start: {process.stderr.read().decode()}")
            time.sleep(0.1)
        yield ports
    finally:
        process.send_signal(signal.SIGQUIT)
        process.wait(timeout=30)


def _answers(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def stored_file(server: ThrowawayInstance, token: str, size: int) -> tuple[str, bytes]:
    """Upload a `size`-byte file in one artifact; return its download path and contents."""
    contents = os.urandom(size)
    session = requests.Session()
    session.headers["Token"] = token
    created = session.post(
        f"{server.api_url}/1.0/artifact/",
        json={
            "category": "debusine:test",
            "workspace": "System",
            "files": {
                "bench.bin": {
                    "size": size,
                    "checksums": {"sha256": hashlib.sha256(contents).hexdigest()},
                    "type": "file",
                }
            },
            "data": {},
        },
    )
    created.raise_for_status()
    artifact = created.json()
    uploaded = session.put(
        f"{server.api_url}/1.0/artifact/{artifact['id']}/files/bench.bin/",
        data=contents,
        headers={"Content-Range": f"bytes 0-{size - 1}/{size}"},
    )
    if uploaded.status_code not in (200, 201):
        raise RuntimeError(f"upload: {uploaded.status_code} {uploaded.text}")
    url: str = artifact["files"]["bench.bin"]["url"]
    return "/" + url.split("/", 3)[3], contents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="requests per API row")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--size", type=int, default=8, help="downloaded file, MiB")
    args = parser.parse_args()
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    downloads = max(20, args.requests // 20)

    with tempfile.TemporaryDirectory(prefix="debusine-bench-nginx-") as work:
        base = Path(work)
        (base / "plain").mkdir()
        (base / "accel").mkdir()
        (base / "nginx").mkdir()
        with (
            throwaway_instance(
                postgres_url=POSTGRES_URL,
                redis_url=REDIS_URL,
                data_dir=base / "plain",
                name_prefix="debusine_bench_nginx",
                workers=args.workers,
            ) as plain,
            throwaway_instance(
                postgres_url=POSTGRES_URL,
                redis_url=REDIS_URL,
                data_dir=base / "accel",
                name_prefix="debusine_bench_nginx",
                workers=args.workers,
                settings={"DEBUSINE_X_ACCEL_REDIRECT_LOCATION": ACCEL_LOCATION},
            ) as accel,
        ):
            token = plain.create_contributor("bench")
            accel_token = accel.create_contributor("bench")
            path, contents = stored_file(plain, token, args.size * MiB)
            accel_path, accel_contents = stored_file(accel, accel_token, args.size * MiB)
            created = requests.post(
                f"{plain.api_url}/1.0/work-request/",
                json={"task_name": "noop", "task_data": {"result": True}},
                headers={"Token": token},
                timeout=30,
            )
            created.raise_for_status()
            work_request = f"/api/1.0/work-request/{created.json()['id']}/"
            # nginx's workers (user nobody) read the store themselves.
            for directory in (base, accel.data_dir):
                directory.chmod(0o755)
            subprocess.run(["chmod", "-R", "a+rX", str(accel.data_dir / "store")], check=True)
            ports = {
                "direct": int(plain.base_url.rsplit(":", 1)[1]),
                "accel": int(accel.base_url.rsplit(":", 1)[1]),
            }
            with nginx(base / "nginx", ports, accel.data_dir / "store") as nginx_ports:

                def session(secret: str) -> Callable[[], requests.Session]:
                    def make() -> requests.Session:
                        made = requests.Session()
                        made.headers["Token"] = secret
                        made.verify = False
                        return made

                    return make

                direct = plain.base_url
                proxied = f"https://localhost:{nginx_ports['direct']}"
                accelerated = f"https://localhost:{nginx_ports['accel']}"
                print(
                    f"{args.workers} server workers, {args.threads} client threads, "
                    f"{args.requests} API requests and {downloads} downloads of "
                    f"{args.size} MiB per row"
                )
                rows = []
                for label, url in (("direct", direct), ("nginx", proxied)):
                    rows.append(
                        measure(
                            f"whoami ({label})",
                            plain.pid,
                            session(token),
                            f"{url}/api/1.0/whoami/",
                            args.requests,
                            args.threads,
                        )
                    )
                    rows.append(
                        measure(
                            f"get work request ({label})",
                            plain.pid,
                            session(token),
                            f"{url}{work_request}",
                            args.requests,
                            args.threads,
                        )
                    )
                for label, url, server, secret, file_path, expected in (
                    ("direct, streamed", direct, plain, token, path, contents),
                    ("nginx, streamed", proxied, plain, token, path, contents),
                    ("nginx, X-Accel-Redirect", accelerated, accel, accel_token, accel_path,
                     accel_contents),
                ):  # fmt: skip
                    rows.append(
                        measure(
                            f"download {args.size} MiB ({label})",
                            server.pid,
                            session(secret),
                            f"{url}{file_path}",
                            downloads,
                            args.threads,
                            expected,
                        )
                    )
                for row in rows:
                    print(row.line())


if __name__ == "__main__":
    main()
