"""
A moto standalone S3 server on a loopback port, for tests and benchmarks of the S3 backend.

`MotoS3Server` starts `moto_server` (from the `moto[server]` test dependency) as a child
process, waits until it answers, and stops it by its PID. Each user takes a fresh bucket
(`new_bucket`), so that tests sharing one server never see each other's objects.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from debusine.testing.processes import free_port

#: Any credentials do for moto; boto3 only needs some to sign requests.
ACCESS_KEY_ID = "testing-access-key"
SECRET_ACCESS_KEY = "testing-secret-key"  # noqa: S105 (moto accepts anything)
REGION = "us-east-1"

STARTUP_TIMEOUT = 30.0


def moto_server_command() -> str:
    """The `moto_server` script of the running interpreter's environment."""
    beside = Path(sys.executable).with_name("moto_server")
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found: install the 'test' extra (moto[server])")
    return found


class MotoS3Server:
    """A running moto server: `endpoint_url`, and the configuration of stores that use it."""

    def __init__(self, environment: dict[str, str] | None = None) -> None:
        """`environment`: extra variables of the server (e.g. INITIAL_NO_AUTH_ACTION_COUNT)."""
        self.environment = environment
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [moto_server_command(), "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, **self.environment} if self.environment else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {self.process.returncode}")
            try:
                requests.get(f"{self.endpoint_url}/moto-api/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not answer within {STARTUP_TIMEOUT} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> MotoS3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self) -> Any:
        """A boto3 client for this server (for checks made behind the backend's back)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def new_bucket(self) -> str:
        """Create a bucket no one else uses and return its name."""
        name = f"debusine-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def store_configuration(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """The configuration of an S3 file store using `bucket` on this server."""
        return {
            "bucket_name": bucket,
            "endpoint_url": self.endpoint_url,
            "region_name": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
            **extra,
        }
