"""
Debian's haproxy in front of several server instances, for tests and benchmarks.

`Haproxy` writes a configuration like the one docs/howto/deploy-server.md shows (round robin,
a health check every half second, retries on connection failures so that a dead instance costs
a retry rather than an error), starts `haproxy -db` on a free loopback port and stops it by
PID. `ensure_haproxy` installs the Debian package when it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from debusine.testing.processes import answers, free_port, stop_process

CONFIG = """
global
    maxconn 1024

defaults
    mode http
    timeout connect 2s
    timeout client 600s
    timeout server 600s
    timeout tunnel 600s
    option redispatch
    option http-keep-alive
    retries 3
    retry-on conn-failure empty-response response-timeout

frontend debusine
    bind 127.0.0.1:{port}
    default_backend servers

backend servers
    balance roundrobin
    option httpchk
    http-check send meth GET uri /api/1.0/whoami/ ver HTTP/1.1 hdr Host localhost
{servers}
"""
SERVER_LINE = "    server {name} 127.0.0.1:{port} check inter 500ms fall 2 rise 2\n"


def ensure_haproxy() -> str:
    """The path of Debian's haproxy, installed with apt-get when missing."""
    found = shutil.which("haproxy")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "haproxy"], check=True, capture_output=True)
        found = shutil.which("haproxy")
    if found is None:
        raise RuntimeError("haproxy is not installed and `apt-get install -y haproxy` failed")
    return found


class Haproxy:
    """haproxy balancing `backends` (name -> loopback port); its URL is `url`."""

    def __init__(self, directory: Path, backends: dict[str, int]) -> None:
        self.directory = directory
        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        servers = "".join(
            SERVER_LINE.format(name=name, port=port) for name, port in self.backends.items()
        )
        config = self.directory / f"haproxy-{self.port}.cfg"
        config.write_text(CONFIG.format(port=self.port, servers=servers))
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [ensure_haproxy(), "-db", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not answers(("127.0.0.1", self.port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not start (see {self.log})")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
            self.process = None

    def __enter__(self) -> Haproxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
