"""
The fault matrix: each row of `tests/faults/table.py` run by `test_fault` injects its fault
into the module's stack (`fault_stack`, tests/faults/conftest.py) at its moment, checks the
row's own outcome, then what every row promises (`FaultStack.assert_recovered`): back within
the lease grace period plus 10 s (printed), no work request left pending or running, every
stored file whole.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from debusine.client.client import DebusineClient
from debusine.client.uploads import FileUploader, LocalFile
from debusine.server.scheduler.passes import SCHEDULER_LOCK_KEY
from debusine.testing.processes import descendants, process_is_alive, wait_for_exit
from debusine.testing.worker import LOG_CONNECTED
from tests.faults.conftest import RECOVERY_BUDGET, FaultStack
from tests.faults.table import FAULTS, MATRIX

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kill(pid: int) -> float:
    """SIGKILL `pid`; return the moment (monotonic) of the fault."""
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def only_pid(stack: FaultStack, name: str) -> int:
    pids = stack.instance.process_pids(name)
    assert len(pids) == 1, f"{name}: {pids}"
    return pids[0]


# --- Which server process holds a connection -----------------------------------------------


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """Inode of the established loopback socket local_port -> remote_port, from /proc/net."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.rsplit(":", 1)[1], 16) == local_port and (
            int(remote.rsplit(":", 1)[1], 16) == remote_port
        ):
            return fields[9]
    return None


def connection_owner(stack: FaultStack, client: socket.socket) -> int:
    """The server worker process that accepted our connection `client`."""
    server_port = urlsplit(stack.instance.base_url).port
    assert server_port is not None
    client_port = client.getsockname()[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        inode = _socket_inode(server_port, client_port)
        if inode is not None:
            wanted = f"socket:[{inode}]"
            for pid in descendants(only_pid(stack, "server")):
                try:
                    descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
                except OSError:
                    continue
                for descriptor in descriptors:
                    try:
                        if str(descriptor.readlink()) == wanted:
                            return pid
                    except OSError:
                        continue
        time.sleep(0.05)
    raise AssertionError("no server process holds the connection")


def open_request(
    stack: FaultStack, method: str, path: str, headers: dict[str, str]
) -> socket.socket:
    """A raw HTTP/1.1 request whose headers are sent and whose body we send ourselves."""
    address = urlsplit(stack.instance.base_url)
    assert address.hostname is not None and address.port is not None
    connection = socket.create_connection((address.hostname, address.port), timeout=10)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {address.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return connection


def assert_connection_dropped(connection: socket.socket) -> None:
    """The server went away without an answer."""
    try:
        data = connection.recv(65536)
    except ConnectionResetError:
        data = b""
    finally:
        connection.close()
    assert data == b"", data[:200]


def work_request_count(stack: FaultStack) -> int:
    [(count,)] = stack.query("SELECT count(*) FROM db_workrequest")
    return int(count)


# --- The faults -------------------------------------------------------------------------------


def server_worker_mid_request(stack: FaultStack) -> None:
    body = b'{"task_name": "noop", "task_data": {}, "event_reactions": {}}'
    before = work_request_count(stack)
    connection = open_request(
        stack,
        "POST",
        "/api/1.0/work-request/",
        {
            "Token": stack.token,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        },
    )
    connection.sendall(body[: len(body) // 2])
    victim = connection_owner(stack, connection)
    since = kill(victim)
    assert_connection_dropped(connection)
    assert work_request_count(stack) == before

    created = stack.create_until_accepted("noop", {}, since)
    assert work_request_count(stack) == before + 1
    stack.assert_recovered("server-worker-mid-request", since, created)
    # Gunicorn replaced the worker it lost.
    wait_for(lambda: len(descendants(only_pid(stack, "server"))) >= 2, 30, "a new server worker")


def server_worker_mid_upload(stack: FaultStack, tmp_path: Path) -> None:
    contents = os.urandom(12 * 1024 * 1024 + 123)
    local_path = tmp_path / "big.bin"
    local_path.write_bytes(contents)
    local = LocalFile.from_path(local_path)
    client = DebusineClient(stack.instance.api_url, stack.token)
    created = client.send(
        "POST",
        "artifact/",
        expected=(201,),
        json_body={
            "category": "debusine:test",
            "workspace": "System",
            "files": {
                "big.bin": {
                    "size": local.size,
                    "checksums": {"sha256": local.sha256},
                    "type": "file",
                }
            },
            "data": {},
        },
    ).json()
    artifact_id = created["id"]
    uploads = stack.instance.data_dir / "uploads"

    connection = open_request(
        stack,
        "PUT",
        f"/api/1.0/artifact/{artifact_id}/files/big.bin/",
        {
            "Token": stack.token,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(contents)),
            "Content-Range": f"bytes 0-{len(contents) - 1}/{len(contents)}",
        },
    )
    # The server writes the body in batches of 4 MiB (streamed_body.BATCH_SIZE): send two.
    connection.sendall(contents[: 9 * 1024 * 1024])

    def partial_size() -> int:
        # The only upload in progress (partial files are named after the FileInArtifact).
        if not uploads.is_dir():
            return 0
        return sum(path.stat().st_size for path in uploads.iterdir())

    wait_for(lambda: partial_size() >= 4 * 1024 * 1024, 30, "the partial upload to grow")
    victim = connection_owner(stack, connection)
    since = kill(victim)
    connection.close()
    kept = partial_size()
    print(f"upload interrupted with {kept} of {len(contents)} bytes on the server")

    stack.wait_until_answering(since)
    uploader = FileUploader(client, chunk_size=2 * 1024 * 1024, retry_delay=0.2)
    uploader.upload(artifact_id, "big.bin", local)
    [first_probe] = [event for event in uploader.events if event[0] == "probe"][:1]
    assert first_probe == ("probe", kept), uploader.events  # resumed, not sent again

    artifact = client.send("GET", f"artifact/{artifact_id}/").json()
    assert artifact["files_to_upload"] == []
    downloaded = client.session.get(artifact["files"]["big.bin"]["url"], timeout=30)
    assert hashlib.sha256(downloaded.content).hexdigest() == local.sha256
    assert list(uploads.iterdir()) == []
    stack.assert_recovered("server-worker-mid-upload", since)


def gunicorn_master(stack: FaultStack) -> None:
    master = only_pid(stack, "server")
    workers = descendants(master)
    since = kill(master)
    for pid in workers:
        assert wait_for_exit(pid, RECOVERY_BUDGET), f"server worker {pid} outlived its master"
    stack.assert_recovered("gunicorn-master", since)
    assert only_pid(stack, "server") != master


def scheduler_mid_pass(stack: FaultStack) -> None:
    with psycopg.connect(stack.instance.database_url, autocommit=True) as holder:
        # Hold the scheduler's lock: the next pass waits for it inside its transaction.
        holder.execute("SELECT pg_advisory_lock(%s)", [SCHEDULER_LOCK_KEY])
        created = stack.create_until_accepted("noop", {}, time.monotonic())

        def pass_waiting() -> bool:
            return bool(
                holder.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND wait_event = 'advisory' "
                    "AND query LIKE '%%pg_advisory_xact_lock%%'"
                ).fetchall()
            )

        wait_for(pass_waiting, 30, "a scheduling pass waiting for the lock")
        since = kill(only_pid(stack, "scheduler"))
        holder.execute("SELECT pg_advisory_unlock(%s)", [SCHEDULER_LOCK_KEY])
    stack.assert_recovered("scheduler-mid-pass", since, created)


def celery_worker_mid_job(stack: FaultStack) -> None:
    stack.instance.admin("workspace", "grant_role", "System", "owner", "faults-contributors")
    stack.client.call(
        "POST",
        "/1.0/workflow-template/",
        json={"name": "faults", "task_name": "noop", "task_data": {"children": 1}, "priority": 0},
    )
    workflow = stack.client.call("POST", "/1.0/workflow/", json={"template_name": "faults"})["id"]
    wait_for(
        lambda: stack.query("SELECT 1 FROM db_workrequest WHERE parent_id = %s", workflow),
        RECOVERY_BUDGET,
        "the workflow's child",
    )
    with (
        psycopg.connect(stack.instance.database_url) as holder,
        psycopg.connect(stack.instance.database_url, autocommit=True) as watcher,
    ):
        # Lock the workflow: the roll-up job that its child's completion queues waits for it,
        # inside its transaction, in the Celery worker.
        holder.execute("SELECT id FROM db_workrequest WHERE id = %s FOR UPDATE", [workflow])

        def roll_up_waiting() -> bool:
            return bool(
                watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> %s AND wait_event_type = 'Lock' AND state = 'active'",
                    [holder.info.backend_pid],
                ).fetchall()
            )

        wait_for(roll_up_waiting, RECOVERY_BUDGET, "the roll-up job to wait for the workflow")
        master = only_pid(stack, "celery")
        pool = descendants(master)
        for pid in pool:
            kill(pid)  # the process running the job
        since = kill(master)
        holder.rollback()
    stack.assert_recovered("celery-worker-mid-job", since, workflow)
    assert stack.final_state(workflow)[:2] == ("completed", "success")
    wait_for(lambda: bool(stack.instance.process_pids("celery")), 10, "celery restarted")


def beat(stack: FaultStack) -> None:
    # Beat is a thread of the scheduler here: its process dies, and with it the fallback
    # pass and lease expiry until the supervisor starts it again. Recovered once the new
    # beat has sent lease expiry again (every 1.5 s in this stack).
    scheduler_log = stack.instance.data_dir / "scheduler.log"
    offset = scheduler_log.stat().st_size
    since = kill(only_pid(stack, "scheduler"))
    wait_for(
        lambda: "Sending due task lease expiry" in scheduler_log.read_text()[offset:],
        RECOVERY_BUDGET,
        "beat's lease expiry job after the restart",
    )
    stack.assert_recovered("beat", since)


def external_worker_mid_task(stack: FaultStack) -> None:
    worker = stack.worker
    assert worker is not None
    created = stack.create_until_accepted("sleep", {"seconds": 3}, time.monotonic())
    wait_for(lambda: stack.final_state(created)[0] == "running", 30, "the sleep to start")
    time.sleep(0.5)
    since = time.monotonic()
    assert worker.kill() == -signal.SIGKILL
    stack.start_worker()
    stack.assert_recovered("external-worker-mid-task", since, created)
    status, _result, retry = stack.final_state(created)
    assert (status, retry is not None) == ("aborted", True)
    [(errors,)] = stack.query(
        "SELECT output_data->'errors' FROM db_workrequest WHERE id = %s", created
    )
    assert [error["code"] for error in errors] == ["worker-failed"]


def redis_restart(stack: FaultStack) -> None:
    created = stack.create_until_accepted("sleep", {"seconds": 2}, time.monotonic())
    since = time.monotonic()
    stack.redis.stop()
    stack.redis.start()
    stack.assert_recovered("redis-restart", since, created)


def redis_restart_data_lost(stack: FaultStack) -> None:
    since = time.monotonic()
    stack.redis.kill()
    stack.redis.forget_data()
    try:
        created = stack.create_until_accepted("noop", {}, since)
    finally:
        stack.redis.start()
    stack.assert_recovered("redis-restart-data-lost", since, created)


def postgres_restart(stack: FaultStack) -> None:
    created = stack.create_until_accepted("sleep", {"seconds": 3}, time.monotonic())
    wait_for(lambda: stack.final_state(created)[0] == "running", 30, "the sleep to start")
    since = time.monotonic()
    stack.postgres.stop()
    assert not stack.answers()
    stack.postgres.start()
    stack.assert_recovered("postgres-restart", since, created)
    assert stack.final_state(created)[:2] == ("completed", "success")


def postgres_connection_killed(stack: FaultStack) -> None:
    created = stack.create_until_accepted("sleep", {"seconds": 1}, time.monotonic())
    wait_for(lambda: stack.final_state(created)[0] == "running", 30, "the sleep to start")
    with (
        psycopg.connect(stack.instance.database_url) as holder,
        psycopg.connect(stack.instance.database_url, autocommit=True) as watcher,
    ):
        # Lock the work request: the worker's completion report waits for it, mid-transaction.
        holder.execute("SELECT id FROM db_workrequest WHERE id = %s FOR UPDATE", [created])

        def blocked_backends() -> list[int]:
            # (Not from `holder`: a transaction sees one snapshot of pg_stat_activity.)
            rows = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> %s AND wait_event_type = 'Lock' AND state = 'active'",
                [holder.info.backend_pid],
            ).fetchall()
            return [int(row[0]) for row in rows]

        wait_for(blocked_backends, 30, "the completion report to wait for the row lock")
        [victim] = blocked_backends()
        since = time.monotonic()
        watcher.execute("SELECT pg_terminate_backend(%s)", [victim])
        holder.rollback()
    stack.assert_recovered("postgres-connection-killed", since, created)
    assert stack.final_state(created) == ("completed", "success", None)


INJECTORS: dict[str, Callable[..., None]] = {
    "server-worker-mid-request": server_worker_mid_request,
    "server-worker-mid-upload": server_worker_mid_upload,
    "gunicorn-master": gunicorn_master,
    "scheduler-mid-pass": scheduler_mid_pass,
    "celery-worker-mid-job": celery_worker_mid_job,
    "beat": beat,
    "external-worker-mid-task": external_worker_mid_task,
    "redis-restart": redis_restart,
    "redis-restart-data-lost": redis_restart_data_lost,
    "postgres-restart": postgres_restart,
    "postgres-connection-killed": postgres_connection_killed,
}

MATRIX_ROWS = [fault.name for fault in FAULTS if fault.test == MATRIX]


@pytest.mark.parametrize("row", MATRIX_ROWS)
def test_fault(row: str, stack: FaultStack, tmp_path: Path) -> None:
    injector = INJECTORS[row]
    if "tmp_path" in injector.__code__.co_varnames[: injector.__code__.co_argcount]:
        injector(stack, tmp_path)
    else:
        injector(stack)


def test_worker_disk_full_fails_the_work_not_the_worker(stack: FaultStack) -> None:
    worker = stack.worker
    assert worker is not None
    disk = stack.worker_disk.directory
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, b"\0" * 65536)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    try:
        failed = stack.create_until_accepted("noop", {}, time.monotonic())
        stack.wait_until_ended(failed, time.monotonic() + 30)
        status, result, _retry = stack.final_state(failed)
        assert (status, result) == ("completed", "error")
        [(errors,)] = stack.query(
            "SELECT output_data->'errors' FROM db_workrequest WHERE id = %s", failed
        )
        [error] = errors
        assert error["code"] == "no-space", error
        assert f"the filesystem of {disk} is full" in error["message"], error
        assert worker.process.poll() is None  # the worker keeps serving
    finally:
        filler.unlink()
    since = time.monotonic()
    stack.assert_recovered("worker-disk-full", since)
    assert worker.process.poll() is None
    assert worker.log_text().count(LOG_CONNECTED) >= 1
    assert process_is_alive(worker.pid)
