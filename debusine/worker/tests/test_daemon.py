"""
Tests of the daemon's wire behaviour against a scripted server (see stub_server.py).

The daemon runs in the test's event loop (or, for signals, as a real subprocess); the stub
records every call so each test can check what went over the wire and what did not.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from debusine.testing.stub_server import StubServer, work_request
from debusine.testing.worker import LOG_CONNECTED, start_worker, write_worker_config
from debusine.worker.config import ConfigError, load_config
from debusine.worker.daemon import WorkerDaemon, WorkerSetupError

TOKEN = "a" * 64

Scenario = Callable[[StubServer, WorkerDaemon, Path], Awaitable[None]]


@asynccontextmanager
async def running_daemon(
    tmp_path: Path, stub: StubServer, **secrets: str
) -> AsyncIterator[tuple[WorkerDaemon, asyncio.Task[int]]]:
    await stub.start()
    config_dir = write_worker_config(
        tmp_path / "config",
        stub.api_url,
        activation_token=secrets.get("activation_token"),
        token=secrets.get("token"),
    )
    daemon = WorkerDaemon(load_config(config_dir))
    run = asyncio.create_task(daemon.run())
    try:
        yield daemon, run
    finally:
        daemon.request_stop()
        with suppress(WorkerSetupError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(run), 30)
        await stub.stop()


def run_scenario(tmp_path: Path, scenario: Scenario, stub: StubServer | None = None) -> None:
    async def main() -> None:
        server = stub or StubServer()
        async with running_daemon(tmp_path, server, token=TOKEN) as (daemon, _run):
            await server.next_event("connected")
            await scenario(server, daemon, tmp_path)

    asyncio.run(main())


async def announce(stub: StubServer, *work_requests: dict[str, Any]) -> None:
    stub.work_requests.extend(work_requests)
    await stub.send({"type": "websocket.send", "text": "work_request_available"})


async def no_event(stub: StubServer, kind: str, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        await stub.next_event(kind, timeout=seconds)


def test_registration_then_connection_with_the_new_token(tmp_path: Path) -> None:
    async def main() -> None:
        stub = StubServer()
        async with running_daemon(tmp_path, stub):
            _kind, registration = await stub.next_event("register")
            _kind, token = await stub.next_event("connected")
            _kind, metadata = await stub.next_event("metadata")
        body = registration["body"]
        assert registration["token"] is None  # no activation token: no token header
        assert re.fullmatch("[0-9a-f]{64}", body["token"])
        assert body["worker_type"] == "external"
        assert body["fqdn"]
        assert token == body["token"]
        token_file = tmp_path / "config" / "token"
        assert token_file.read_text().strip() == token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert metadata["noop:version"] == 1
        assert metadata["system:worker_type"] == "external"

    asyncio.run(main())


def test_registration_with_an_activation_token(tmp_path: Path) -> None:
    async def main() -> None:
        stub = StubServer()
        async with running_daemon(tmp_path, stub, activation_token="b" * 64):
            _kind, registration = await stub.next_event("register")
            await stub.next_event("connected")
        assert registration["token"] == "b" * 64
        assert registration["body"]["token"] != "b" * 64

    asyncio.run(main())


def test_refused_registration_stops_the_daemon(tmp_path: Path) -> None:
    async def main() -> None:
        stub = StubServer(register_status=400)
        async with running_daemon(tmp_path, stub) as (_daemon, run):
            with pytest.raises(WorkerSetupError, match="answered 400"):
                await asyncio.wait_for(run, 10)
        assert not (tmp_path / "config" / "token").exists()

    asyncio.run(main())


def test_a_rejected_worker_retries_quickly_until_enabled(tmp_path: Path) -> None:
    async def main() -> None:
        stub = StubServer(disabled_tokens={TOKEN})
        async with running_daemon(tmp_path, stub, token=TOKEN):
            started = time.monotonic()
            for _attempt in range(3):
                await stub.next_event("rejected")
            three_attempts = time.monotonic() - started
            stub.disabled_tokens.clear()
            await stub.next_event("connected", timeout=15)
        # The first retries come within a second or two (backoff from 0.25 s).
        assert three_attempts < 3

    asyncio.run(main())


def test_noop_success_is_reported_without_debug_logs(tmp_path: Path) -> None:
    async def scenario(stub: StubServer, daemon: WorkerDaemon, tmp: Path) -> None:
        await announce(stub, work_request(11, "noop", {"result": True}))
        _kind, (work_request_id, body) = await stub.next_event("completed", "artifact")
        assert work_request_id == 11
        assert body == {
            "result": "success",
            "output_data": {"runtime_statistics": {"duration": 0, "cpu_time": 0}},
        }

    run_scenario(tmp_path, scenario)


class ArtifactStubServer(StubServer):
    """
    The stub, answering artifact creation with a whole Artifact object and the upload's
    probe (`Content-Range: bytes */SIZE`) with what it holds, as a real server does: the
    daemon uploads debug logs through the client's resumable uploader, which probes first.
    """

    async def create_artifact(self, request: web.Request) -> web.Response:
        response = await super().create_artifact(request)
        assert response.text is not None
        artifact = json.loads(response.text)
        artifact.update(
            url="/debusine/Other/artifact/7/",
            scope="debusine",
            category="debusine:work-request-debug-logs",
            data={},
            created_at="2025-01-01T00:00:00Z",
            download_tar_gz_url=f"{self.base_url}/debusine/Other/artifact/7/download/",
        )
        return web.json_response(artifact, status=201)

    async def upload(self, request: web.Request) -> web.Response:
        if request.headers["Content-Range"].startswith("bytes */"):
            path = request.match_info["path"]
            await self.events.put(("probe", path))
            return web.Response(
                status=206, headers={"Range": f"bytes=0-{len(self.uploads.get(path, b''))}"}
            )
        return await super().upload(request)


def test_noop_failure_uploads_stages_log_then_reports(tmp_path: Path) -> None:
    async def scenario(stub: StubServer, daemon: WorkerDaemon, tmp: Path) -> None:
        await announce(stub, work_request(12, "noop", {"result": False}, workspace="Other"))
        _kind, artifact = await stub.next_event("artifact")
        _kind, probed = await stub.next_event("probe")
        _kind, upload = await stub.next_event("upload")
        _kind, (work_request_id, body) = await stub.next_event("completed")
        assert artifact["category"] == "debusine:work-request-debug-logs"
        assert artifact["work_request"] == 12
        assert artifact["workspace"] == "Other"
        assert list(artifact["files"]) == ["stages.log"]
        assert artifact["files"]["stages.log"]["content_type"] == "text/plain; charset=utf-8"
        assert probed == "stages.log"
        assert upload == {"path": "stages.log", "content_type": None}
        assert b"run: finished, returned False" in stub.uploads["stages.log"]
        assert (work_request_id, body["result"]) == (12, "failure")
        assert set(body["output_data"]["runtime_statistics"]) == {"duration", "cpu_time"}

    run_scenario(tmp_path, scenario, ArtifactStubServer())


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"task_type": "Server"}, "wrong-task-type", "not Server tasks"),
        ({"task_name": "nosuchtask"}, "setup-failed", "task name is not registered"),
        ({"task_data": {"result": True, "foo": "bar"}}, "configure-failed", "foo"),
        ({"dynamic_task_data": {"bogus": 1}}, "configure-failed", "dynamic task data"),
    ],
)
def test_work_requests_that_cannot_run_are_errors(
    tmp_path: Path, fields: dict[str, Any], code: str, message: str
) -> None:
    async def scenario(stub: StubServer, daemon: WorkerDaemon, tmp: Path) -> None:
        await announce(stub, {**work_request(13, "noop", {}), **fields})
        _kind, (_id, body) = await stub.next_event("completed", "artifact")
        assert body["result"] == "error"
        assert "runtime_statistics" not in body["output_data"]
        [error] = body["output_data"]["errors"]
        assert error["code"] == code
        assert message in error["message"]

    run_scenario(tmp_path, scenario)


def test_abort_stops_the_task_and_reports_nothing(tmp_path: Path) -> None:
    async def scenario(stub: StubServer, daemon: WorkerDaemon, tmp: Path) -> None:
        await announce(stub, work_request(14, "sleep", {"seconds": 300}))
        await stub.next_event("get-next")
        while daemon._current is None or daemon._current.process is None:
            await asyncio.sleep(0.01)
        process = daemon._current.process
        # An abort for another work request changes nothing.
        await stub.send(
            {"type": "websocket.send", "text": "work_request_aborted", "work_request_id": 99}
        )
        await asyncio.sleep(0.2)
        assert not process.finished
        await stub.send(
            {"type": "websocket.send", "text": "work_request_aborted", "work_request_id": 14}
        )
        outcome = await asyncio.wait_for(process.wait(), 10)
        assert outcome.signal == signal.SIGTERM
        await no_event(stub, "completed", 1)
        # The worker goes on with the next work request.
        await announce(stub, work_request(15, "noop", {}))
        _kind, (work_request_id, body) = await stub.next_event("completed")
        assert (work_request_id, body["result"]) == (15, "success")

    run_scenario(tmp_path, scenario)


def test_announcements_while_busy_lead_to_fetching_after_the_report(tmp_path: Path) -> None:
    async def scenario(stub: StubServer, daemon: WorkerDaemon, tmp: Path) -> None:
        await announce(stub, work_request(16, "sleep", {"seconds": 1}))
        await stub.next_event("get-next")
        for _repeat in range(3):
            await stub.send({"type": "websocket.send", "text": "work_request_available"})
        stub.work_requests.append(work_request(17, "noop", {}))
        # No fetch while the sleep runs: it would make a server retry the running one.
        _kind, (first, _body) = await stub.next_event("completed", "get-next", timeout=10)
        assert first == 16
        await stub.next_event("get-next")
        _kind, (second, _body) = await stub.next_event("completed")
        assert second == 17
        # After each report the worker asks once more (our server schedules on get-next);
        # the 204 ends it, whatever number of announcements arrived meanwhile.
        await stub.next_event("get-next")
        await no_event(stub, "get-next", 0.5)

    run_scenario(tmp_path, scenario)


def test_unknown_and_malformed_frames_are_ignored(tmp_path: Path) -> None:
    async def scenario(stub: StubServer, daemon: WorkerDaemon, tmp: Path) -> None:
        await stub.websockets[-1].send_str("not json")
        await stub.websockets[-1].send_str("[1, 2]")
        await stub.send({"type": "websocket.send", "text": "something_new", "x": 1})
        await announce(stub, work_request(18, "noop", {}))
        _kind, (work_request_id, _body) = await stub.next_event("completed")
        assert work_request_id == 18

    run_scenario(tmp_path, scenario)


def test_transient_completion_failures_are_retried(tmp_path: Path) -> None:
    stub = StubServer(completion_answers=[(503, b""), (500, b"")])

    async def scenario(stub: StubServer, daemon: WorkerDaemon, tmp: Path) -> None:
        await announce(stub, work_request(19, "noop", {}))
        for _attempt in range(3):
            _kind, (work_request_id, _body) = await stub.next_event("completed")
        assert work_request_id == 19
        assert daemon.exit_code == 0

    run_scenario(tmp_path, scenario, stub)


@pytest.mark.parametrize(
    "answers",
    [
        [(500, b"")] * 5,  # never delivered
        [(200, b"{}")],  # Debusine workers require an empty body
        [(401, b'{"title": "Invalid worker"}')],
    ],
)
def test_undeliverable_completion_exits_with_status_1(
    tmp_path: Path, answers: list[tuple[int, bytes]]
) -> None:
    async def main() -> None:
        stub = StubServer(completion_answers=list(answers))
        async with running_daemon(tmp_path, stub, token=TOKEN) as (_daemon, run):
            await stub.next_event("connected")
            await announce(stub, work_request(20, "noop", {}))
            assert await asyncio.wait_for(run, 30) == 1
        assert stub.completion_answers == []  # every attempt was made

    asyncio.run(main())


def test_sigterm_stops_the_task_reports_nothing_and_exits_0(tmp_path: Path) -> None:
    async def main() -> None:
        stub = StubServer()
        await stub.start()
        try:
            worker = start_worker(stub.api_url, tmp_path, token=TOKEN)
            await stub.next_event("connected", timeout=30)
            await announce(stub, work_request(21, "sleep", {"seconds": 300}))
            await stub.next_event("get-next")
            await asyncio.to_thread(worker.wait_for_log, "work request 21: sleep")
            task_pids = [
                int(pid)
                for pid in os.listdir("/proc")
                if pid.isdigit() and _parent_of(int(pid)) == worker.pid
            ]
            assert await asyncio.to_thread(worker.stop) == 0
            await stub.next_event("disconnected")
            await no_event(stub, "completed", 0.5)
            assert "stopping the task of work request 21" in worker.log_text()
            for pid in task_pids:
                assert not Path(f"/proc/{pid}").exists() or _parent_of(pid) != worker.pid
        finally:
            await stub.stop()

    asyncio.run(main())


def _parent_of(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return None
    return int(fields[1])


def test_subprocess_worker_helper_registers_and_logs(tmp_path: Path) -> None:
    async def main() -> None:
        stub = StubServer()
        await stub.start()
        try:
            worker = start_worker(stub.api_url, tmp_path)
            await stub.next_event("connected", timeout=30)
            await asyncio.to_thread(worker.wait_for_log, LOG_CONNECTED)
            assert worker.token is not None
            assert await asyncio.to_thread(worker.stop) == 0
        finally:
            await stub.stop()

    asyncio.run(main())


def test_a_task_directory_that_cannot_be_made_is_an_error_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the error report the work request would stay running, its worker silent."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))

    async def scenario(stub: StubServer, daemon: WorkerDaemon, tmp: Path) -> None:
        await announce(stub, work_request(14, "noop", {"result": True}))
        _kind, (work_request_id, body) = await stub.next_event("completed", "artifact")
        assert (work_request_id, body["result"]) == (14, "error")
        [error] = body["output_data"]["errors"]
        assert error["code"] == "setup-failed"
        assert "cannot create the task directory" in error["message"]

        (tmp / "missing").mkdir()
        await announce(stub, work_request(15, "noop", {"result": True}))
        _kind, (work_request_id, body) = await stub.next_event("completed", "artifact")
        assert (work_request_id, body["result"]) == (15, "success")

    run_scenario(tmp_path, scenario)


class MetadataService:
    """A loopback instance metadata service (IMDSv2) that announces an interruption on cue."""

    def __init__(self) -> None:
        self.announced = False
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/latest/api/token", self.token)
        app.router.add_get("/latest/meta-data/spot/instance-action", self.instance_action)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/latest/meta-data/spot/instance-action"

    async def token(self, request: web.Request) -> web.Response:
        return web.Response(text="imds-token")

    async def instance_action(self, request: web.Request) -> web.Response:
        if request.headers.get("X-aws-ec2-metadata-token") != "imds-token":
            return web.Response(status=401)
        if not self.announced:
            return web.Response(status=404)
        return web.json_response({"action": "terminate", "time": "2026-12-03T20:30:00Z"})


def test_an_interruption_notice_stops_new_work_and_is_reported(tmp_path: Path) -> None:
    async def main() -> None:
        stub = StubServer()
        imds = MetadataService()
        await stub.start()
        await imds.start()
        config_dir = write_worker_config(tmp_path / "config", stub.api_url, token=TOKEN)
        with (config_dir / "config.ini").open("a") as config:
            config.write(f"interruption-notice-url = {imds.url}\n")
            config.write("interruption-notice-interval = 0.1\n")
        daemon = WorkerDaemon(load_config(config_dir))
        run = asyncio.create_task(daemon.run())
        try:
            await stub.next_event("connected")
            _, first = await stub.next_event("metadata")
            assert "system:interruption_notice" not in first

            imds.announced = True
            _, reported = await stub.next_event("metadata")
            assert json.loads(reported["system:interruption_notice"]) == {
                "action": "terminate",
                "time": "2026-12-03T20:30:00Z",
            }
            await announce(stub, work_request(11, "noop", {"result": True}))
            await no_event(stub, "get-next", 1.0)  # no new work once interrupted
        finally:
            daemon.request_stop()
            await asyncio.wait_for(run, 30)
            await imds.stop()
            await stub.stop()

    asyncio.run(main())


def test_interruption_notice_settings_are_checked(tmp_path: Path) -> None:
    config_dir = write_worker_config(tmp_path, "http://127.0.0.1:1/api")
    with (config_dir / "config.ini").open("a") as config:
        config.write("interruption-notice-url = 169.254.169.254/latest\n")
    with pytest.raises(ConfigError, match=r"interruption-notice-url .* is not an http URL"):
        load_config(config_dir)
    write_worker_config(tmp_path, "http://127.0.0.1:1/api")
    with (config_dir / "config.ini").open("a") as config:
        config.write("interruption-notice-interval = soon\n")
    with pytest.raises(ConfigError, match="interruption-notice-interval 'soon' is not"):
        load_config(config_dir)
