"""
Several servers behind Debian's haproxy, one of them killed with SIGKILL under load.

Two server instances (two ports, DEBUSINE_MULTI_SERVER on) share the PostgreSQL database,
Redis and an S3 store (a moto server); one scheduler runs. Debian's 0.11.3 client creates noop
work requests and uploads artifacts through haproxy while two 0.11.3 workers run the work
requests, connected through haproxy too. Midway, one server instance is killed with SIGKILL
(its uvicorn workers follow it, see `parent_death`). Every work request still completes, every
uploaded file downloads back byte for byte, and the client saw at most connections that it (or
haproxy) retried.

First, the refusal: a server configured as one of several does not start while the instance's
scope still uses its Local store.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from debusine.testing.devstack import ProcessSpec, gunicorn_argv
from debusine.testing.haproxy import Haproxy
from debusine.testing.moto import MotoS3Server
from debusine.testing.processes import answers, free_port
from debusine.testing.reference_client import ReferenceClient, ReferenceWorker
from debusine.testing.reference_worker import LOG_CONNECTED, start_reference_worker
from debusine.testing.throwaway import ThrowawayInstance
from debusine.testing.worker import WorkerProcess
from tests.compat.conftest import write_client_config
from tests.integration.conftest import scheduling_instance
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.compat

#: Work of the client before and after the kill.
NOOPS_PER_PHASE = 6
UPLOADS_PER_PHASE = 3
UPLOAD_SIZE = 3 * 1024 * 1024 + 11
STARTUP = 60.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = STARTUP) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3Server]:
    with MotoS3Server() as server:
        yield server


@pytest.fixture(scope="module")
def instance(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[ThrowawayInstance]:
    """The shared database, Redis and scheduler (its own first server is stopped later)."""
    with scheduling_instance(tmp_path_factory, f"multi_server_{worker_id}") as running:
        yield running


def multi_server_environment(instance: ThrowawayInstance) -> dict[str, str]:
    return {**instance.environment, "DEBUSINE_MULTI_SERVER": "true"}


def test_a_server_of_several_refuses_a_local_store(instance: ThrowawayInstance) -> None:
    port = free_port()
    result = subprocess.run(
        gunicorn_argv(f"127.0.0.1:{port}", workers=1),
        env=multi_server_environment(instance),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "Error: DEBUSINE_MULTI_SERVER is on but scopes use file stores that live on one machine:"
        " Default (Local, used by scope debusine)." in result.stderr
    ), result.stderr
    assert not answers(("127.0.0.1", port))


@dataclass
class Cluster:
    """Two servers behind haproxy; the processes to kill."""

    url: str
    servers: dict[str, int]  # name -> gunicorn arbiter PID


def serves(port: int) -> bool:
    if not answers(("127.0.0.1", port)):
        return False
    return requests.get(f"http://127.0.0.1:{port}/api/1.0/whoami/", timeout=5).ok


@pytest.fixture(scope="module")
def cluster(
    instance: ThrowawayInstance, moto: MotoS3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("multi-server")
    # The instance moves its files to S3, as docs/howto/deploy-server.md says.
    configuration = directory / "s3.json"
    configuration.write_text(json.dumps(moto.store_configuration(moto.new_bucket())))
    instance.admin("file_store", "create", "s3", "S3", "--configuration", str(configuration))
    instance.admin(
        "scope", "add_file_store", "debusine", "s3",
        "--upload-priority", "100", "--download-priority", "100",
    )  # fmt: skip
    instance.admin("scope", "remove_file_store", "debusine", "Default")
    # The instance's own server (one of a kind) is not behind haproxy: stop it.
    for spec, process in instance.supervisor.running:
        if spec.name == "server":
            process.terminate()
            process.wait(30)

    ports = {"one": free_port(), "two": free_port()}
    servers = {}
    for name, port in ports.items():
        spec = ProcessSpec(f"server-{name}", gunicorn_argv(f"127.0.0.1:{port}", workers=1))
        instance.supervisor.start(
            spec, env=multi_server_environment(instance), output=directory / f"{name}.log"
        )
        servers[name] = instance.supervisor.running[-1][1].pid
    for name, port in ports.items():
        wait_for(lambda port=port: serves(port), f"server {name} answers")  # type: ignore[misc]

    with Haproxy(directory, ports) as haproxy:
        wait_for(
            lambda: requests.get(f"{haproxy.url}/api/1.0/whoami/", timeout=5).ok,
            "haproxy forwards",
        )
        yield Cluster(haproxy.url, servers)


@dataclass
class ClientLoad:
    """What the client did: work requests created, files uploaded, commands it had to repeat."""

    work_requests: list[int] = field(default_factory=list)
    uploads: dict[int, Path] = field(default_factory=dict)  # artifact id -> original file
    repeated: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_client(
    client: ReferenceClient, home: Path, load: ClientLoad, *args: str, stdin: str | None = None
) -> str:
    """Run the client; a command cut by the kill is repeated once (and recorded)."""
    for attempt in range(2):
        result = client.run(*args, home=home, stdin=stdin, cwd=home)
        if result.returncode == 0:
            return result.stdout
        if attempt == 0:
            load.repeated.append(f"{args[0]}: {result.stderr.strip()[-300:]}")
    load.failures.append(f"{' '.join(args)}: {result.stdout}\n{result.stderr}")
    return ""


def client_phase(
    client: ReferenceClient, home: Path, load: ClientLoad, directory: Path, phase: str
) -> None:
    import yaml

    for index in range(NOOPS_PER_PHASE):
        output = run_client(
            client, home, load, "create-work-request", "noop", stdin="result: true\n"
        )
        if output:
            load.work_requests.append(int(yaml.safe_load(output)["work_request_id"]))
        if index < UPLOADS_PER_PHASE:
            upload = directory / f"{phase}-{index}.bin"
            upload.write_bytes(os.urandom(UPLOAD_SIZE))
            output = run_client(
                client, home, load, "create-artifact", "debusine:test",
                "--upload-base-directory", str(directory), "--upload", upload.name,
            )  # fmt: skip
            if output:
                load.uploads[int(yaml.safe_load(output)["artifact_id"])] = upload


@pytest.fixture(scope="module")
def workers(
    instance: ThrowawayInstance,
    cluster: Cluster,
    installed_reference_worker: ReferenceWorker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    try:
        for index in range(2):
            activation = instance.create_worker_activation(f"multi-{index}.example.org")
            started.append(
                start_reference_worker(
                    installed_reference_worker,
                    f"{cluster.url}/api",
                    tmp_path_factory.mktemp(f"multi-worker-{index}"),
                    activation_token=activation,
                )
            )
        for worker in started:
            worker.wait_for_log(LOG_CONNECTED, timeout=STARTUP)
        yield started
    finally:
        for worker in started:
            worker.stop()


def test_killing_one_server_loses_no_work_and_no_upload(
    instance: ThrowawayInstance,
    cluster: Cluster,
    workers: list[WorkerProcess],
    installed_reference_client: ReferenceClient,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    token = instance.create_contributor("multi-server-user")
    write_client_config(home, api_url=f"{cluster.url}/api", token=token)
    load = ClientLoad()
    uploads = tmp_path / "uploads"
    uploads.mkdir()

    client_phase(installed_reference_client, home, load, uploads, "before")
    # Under load: the client keeps going in a thread while server "one" is killed.
    after = threading.Thread(
        target=client_phase,
        args=(installed_reference_client, home, load, uploads, "after"),
    )
    after.start()
    time.sleep(1)
    os.kill(cluster.servers["one"], signal.SIGKILL)
    after.join()

    assert load.failures == [], "\n".join(load.failures)
    assert len(load.work_requests) == 2 * NOOPS_PER_PHASE
    assert len(load.uploads) == 2 * UPLOADS_PER_PHASE
    # At most retried connections: only commands cut by the kill were repeated.
    assert len(load.repeated) <= 2, load.repeated

    user = RestUser(instance, token)
    user.api_url = f"{cluster.url}/api"
    done = user.wait_all_completed(load.work_requests, timeout=300)
    assert [work_request["result"] for work_request in done] == ["success"] * len(done)

    for artifact_id, original in load.uploads.items():
        target = tmp_path / f"download-{artifact_id}"
        target.mkdir()
        run_client(
            installed_reference_client, home, load,
            "download-artifact", str(artifact_id), "--target-directory", str(target),
        )  # fmt: skip
        downloaded = target / original.name
        assert downloaded.is_file(), f"artifact {artifact_id}: nothing downloaded"
        assert (
            hashlib.sha256(downloaded.read_bytes()).hexdigest()
            == hashlib.sha256(original.read_bytes()).hexdigest()
        ), f"artifact {artifact_id} differs"
    assert load.failures == [], "\n".join(load.failures)
    # The workers survived the kill (they reconnected through haproxy).
    assert all(worker.process.poll() is None for worker in workers)
