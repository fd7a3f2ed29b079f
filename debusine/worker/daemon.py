"""
The worker daemon: registration, the websocket loop, and running work requests one at a time.

The daemon is one asyncio loop. It registers if it has no token yet, then stays connected to
the server's worker websocket for good, reconnecting after a short random delay whenever the
connection fails, is refused or closes. It acts on the server's frames only (it never polls):

- `request_dynamic_metadata`: gather and send the machine's metadata;
- `work_request_available`: fetch the assigned work request and run it in a child process,
  then upload what remains of its debug logs and report its completion;
- `work_request_aborted` (our extension): stop that work request's process and report nothing;
- `connection_rejected` / `connection_closed`: reconnect (the token may be enabled later).

With `interruption-notice-url` configured, the daemon also looks at that instance metadata URL
every `interruption-notice-interval` seconds (IMDSv2 token first, when the metadata service
hands one out). Once it answers 200, the cloud is about to reclaim the instance: the worker
takes no new work and reports `system:interruption_notice` in its dynamic metadata, so the
provisioner terminates the instance and retries its work request elsewhere at once.

SIGTERM or SIGINT stops a running task (reporting nothing: the server retries it elsewhere),
closes the websocket and ends the daemon with status 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import signal
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from debusine.client.errors import ClientError
from debusine.protocol.work_requests import LenientWorkRequestResponse
from debusine.protocol.workers import (
    FRAME_CONNECTED,
    FRAME_REQUEST_DYNAMIC_METADATA,
    FRAME_WORK_REQUEST_ABORTED,
    FRAME_WORK_REQUEST_AVAILABLE,
    OutputData,
    OutputDataError,
    WorkRequestCompletedRequest,
)
from debusine.tasks import BaseTask, TaskContext, TaskDataError, TaskType, UnknownTaskError
from debusine.tasks.execution import no_space_error, remaining_debug_logs, upload_debug_logs
from debusine.worker.api import ServerAPI, ServerError
from debusine.worker.config import WorkerConfig, generate_token, read_secret, write_token
from debusine.worker.metadata import dynamic_metadata
from debusine.worker.runner import TaskProcess, TaskResult

logger = logging.getLogger("debusine.worker")

#: Seconds between the websocket pings the worker sends (a missing pong drops the connection).
HEARTBEAT = 30.0

#: Reconnection delays: the first retry comes quickly, later ones double up to the cap; each
#: is scaled by a random factor in [0.5, 1] so that many workers do not reconnect in step.
RECONNECT_FIRST_DELAY = 0.25
RECONNECT_MAX_DELAY = 5.0

#: Waits between attempts to report a completion; after the last one the daemon exits with 1.
COMPLETION_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)

#: Waits between attempts to fetch an announced work request when the server is unreachable.
FETCH_RETRY_DELAYS = (0.5, 1.0, 2.0)

#: The dynamic metadata key announcing the instance's interruption (read by the provisioner).
INTERRUPTION_NOTICE_KEY = "system:interruption_notice"


class WorkerSetupError(Exception):
    """The daemon cannot start (e.g. registration refused); it exits with status 3."""


def reconnect_delay(failures: int) -> float:
    """Seconds to wait before the next connection attempt after `failures` failed ones."""
    ceiling = min(RECONNECT_MAX_DELAY, RECONNECT_FIRST_DELAY * 2.0 ** min(failures, 16))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def error_completion(code: str, message: str) -> WorkRequestCompletedRequest:
    """Completion report of a work request that could not run (no runtime statistics)."""
    return WorkRequestCompletedRequest(
        result="error",
        output_data=OutputData(errors=[OutputDataError(code=code, message=message)]),
    )


@dataclass
class CurrentWorkRequest:
    """The work request being handled, from fetch until its completion is reported."""

    id: int
    process: TaskProcess | None = None
    #: Set when the server aborted it: from then on, nothing is reported for it.
    aborted: bool = False


class WorkerDaemon:
    """One worker: a connection to the server, at most one running work request."""

    #: What the worker registers as; the signing worker (debusine.signing.worker) says signing.
    WORKER_TYPE: Literal["external", "signing"] = "external"

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.exit_code = 0
        self.api: ServerAPI | None = None
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._fetch_wanted = False
        self._work_loop_task: asyncio.Task[None] | None = None
        self._current: CurrentWorkRequest | None = None
        self._background: set[asyncio.Task[Any]] = set()
        #: The instance metadata's interruption notice, once it announced one.
        self.interruption_notice: str | None = None

    # --- Life cycle --------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None) -> None:
        if signum is not None:
            logger.info("received %s: stopping", signal.Signals(signum).name)
        self._stop_requested.set()

    async def run(self) -> int:
        """Run until stopped; return the exit status. Raise WorkerSetupError (exit 3)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self.api = ServerAPI(session, self.config.api_url, None)
            token = await self._ensure_registered(self.api)
            self.api.token = token
            connection = asyncio.create_task(self._stay_connected(session, token))
            if self.config.interruption_notice_url is not None:
                self._spawn(self._watch_interruption_notice(session))
            stop_requested = asyncio.create_task(self._stop_requested.wait())
            await asyncio.wait({connection, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
            await self._shutdown(connection, stop_requested)
        logger.info("stopped")
        return self.exit_code

    async def _shutdown(self, connection: asyncio.Task[None], *others: asyncio.Task[Any]) -> None:
        self._stopping = True
        current = self._current
        if current is not None and current.process is not None:
            logger.info("stopping the task of work request %d (not reporting it)", current.id)
            await current.process.stop()
        tasks = [connection, *others, *self._background]
        if self._work_loop_task is not None:
            tasks.append(self._work_loop_task)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, asyncio.CancelledError
            ):
                raise result

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run `coroutine` in the background, keeping a reference until it is done."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _ensure_registered(self, api: ServerAPI) -> str:
        """The worker's token: the saved one, or a new one registered with the server."""
        token = read_secret(self.config.token_path)
        if token is not None:
            return token
        activation_token = read_secret(self.config.activation_token_path)
        token = generate_token()
        fqdn = await asyncio.to_thread(socket.getfqdn)
        try:
            await api.register(token, fqdn, activation_token, self.WORKER_TYPE)
        except ServerError as error:
            raise WorkerSetupError(f"cannot register with the server: {error}") from None
        write_token(self.config, token)
        if activation_token is not None:
            logger.info("registered as %s with an activation token", fqdn)
        else:
            logger.info("registered as %s: an administrator must now enable this worker", fqdn)
        return token

    # --- The websocket -----------------------------------------------------------------------

    async def _stay_connected(self, session: aiohttp.ClientSession, token: str) -> None:
        url = self.config.websocket_url
        failures = 0
        while not self._stopping:
            accepted = False
            try:
                async with session.ws_connect(
                    url, headers={"token": token}, heartbeat=HEARTBEAT
                ) as websocket:
                    accepted = await self._read_frames(websocket)
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                logger.warning("cannot connect to %s: %s", url, str(error) or type(error).__name__)
            failures = 0 if accepted else failures + 1
            delay = reconnect_delay(failures)
            logger.info("reconnecting in %.2f s", delay)
            await asyncio.sleep(delay)

    async def _read_frames(self, websocket: aiohttp.ClientWebSocketResponse) -> bool:
        """Handle frames until the connection ends; True if the server accepted us."""
        accepted = False
        async for message in websocket:
            if message.type == aiohttp.WSMsgType.ERROR:
                logger.warning("websocket error: %s", websocket.exception())
                break
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(message.data)
            except ValueError:
                logger.warning("ignoring a websocket frame that is not JSON: %.200r", message.data)
                continue
            if not isinstance(frame, dict):
                logger.warning("ignoring a websocket frame that is not an object: %.200r", frame)
                continue
            if frame.get("type") in ("connection_rejected", "connection_closed"):
                logger.warning(
                    "the server sent %s: %s (reason code %s)",
                    frame["type"],
                    frame.get("reason"),
                    frame.get("reason_code"),
                )
                return accepted
            text = frame.get("text")
            if text == FRAME_CONNECTED:
                accepted = True
                logger.info("connected to %s", self.config.websocket_url)
            elif text == FRAME_REQUEST_DYNAMIC_METADATA:
                self._spawn(self._send_dynamic_metadata())
            elif text == FRAME_WORK_REQUEST_AVAILABLE:
                self._work_wanted()
            elif text == FRAME_WORK_REQUEST_ABORTED:
                self._aborted(frame.get("work_request_id"))
            else:
                logger.debug("ignoring websocket frame %.200r", frame)
        logger.warning("websocket closed (code %s)", websocket.close_code)
        return accepted

    async def _send_dynamic_metadata(self) -> None:
        assert self.api is not None
        metadata = await asyncio.to_thread(self.dynamic_metadata)
        try:
            status = await self.api.put_dynamic_metadata(metadata)
        except ServerError as error:
            logger.warning("cannot send dynamic metadata: %s", error)
            return
        if status == 204:
            logger.debug("dynamic metadata sent")
        else:
            logger.warning("dynamic metadata update answered %d", status)

    def dynamic_metadata(self) -> dict[str, Any]:
        """The dynamic metadata this worker reports (runs in a thread)."""
        metadata = dynamic_metadata(self.WORKER_TYPE)
        if self.interruption_notice is not None:
            metadata[INTERRUPTION_NOTICE_KEY] = self.interruption_notice
        return metadata

    # --- Interruption notices ----------------------------------------------------------------

    async def _read_interruption_notice(self, session: aiohttp.ClientSession) -> str | None:
        """The notice's body if the metadata service announces one now, else None."""
        url = self.config.interruption_notice_url
        assert url is not None
        parts = urlsplit(url)
        headers = {}
        timeout = aiohttp.ClientTimeout(total=2)
        try:
            # IMDSv2: a session token first (a service without tokens answers 404 or 405).
            async with session.put(
                f"{parts.scheme}://{parts.netloc}/latest/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
                timeout=timeout,
            ) as answer:
                if answer.status == 200:
                    headers["X-aws-ec2-metadata-token"] = (await answer.text()).strip()
            async with session.get(url, headers=headers, timeout=timeout) as answer:
                if answer.status == 200:
                    return (await answer.text()).strip() or "announced"
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            logger.debug("cannot read %s: %s", url, error)
        return None

    async def _watch_interruption_notice(self, session: aiohttp.ClientSession) -> None:
        while not self._stopping:
            notice = await self._read_interruption_notice(session)
            if notice is not None:
                logger.warning(
                    "interruption notice from %s: %.200s; taking no new work",
                    self.config.interruption_notice_url,
                    notice,
                )
                self.interruption_notice = notice
                await self._send_dynamic_metadata()
                return
            await asyncio.sleep(self.config.interruption_notice_interval)

    # --- Work requests -----------------------------------------------------------------------

    def _work_wanted(self) -> None:
        """The server announced work: fetch it now, or as soon as the current one is done."""
        self._fetch_wanted = True
        if self._work_loop_task is None and not self._stopping:
            self._work_loop_task = asyncio.create_task(self._work_loop())

    async def _work_loop(self) -> None:
        # Fetching while a work request runs would make the server think this worker
        # restarted and retry the running one elsewhere, so announcements received meanwhile
        # only set `_fetch_wanted`, and the fetch happens once the current one is reported.
        try:
            while self._fetch_wanted and not self._stopping and self.interruption_notice is None:
                self._fetch_wanted = False
                work_request = await self._fetch_work_request()
                if work_request is not None:
                    await self._handle(work_request)
                    # Ask again at once: our server schedules for a worker that asks
                    # (get-next), which saves waiting for the scheduler's notification.
                    # Nothing assigned costs one 204.
                    self._fetch_wanted = True
        finally:
            self._work_loop_task = None

    async def _fetch_work_request(self) -> LenientWorkRequestResponse | None:
        assert self.api is not None
        for delay in (*FETCH_RETRY_DELAYS, None):
            try:
                return await self.api.get_next_work_request()
            except ServerError as error:
                if not error.transient or delay is None:
                    logger.error("cannot fetch the next work request: %s", error)
                    return None
                logger.warning("cannot fetch the next work request (retrying): %s", error)
                await asyncio.sleep(delay)
        return None  # pragma: no cover - the loop always returns

    def _aborted(self, work_request_id: Any) -> None:
        current = self._current
        if current is None or current.id != work_request_id:
            logger.info("work request %s was aborted; it is not running here", work_request_id)
            return
        logger.info("work request %d was aborted by the server: stopping it", current.id)
        current.aborted = True
        if current.process is not None and not current.process.finished:
            self._spawn(current.process.stop())

    async def _handle(self, work_request: LenientWorkRequestResponse) -> None:
        current = CurrentWorkRequest(work_request.id)
        self._current = current
        try:
            completion = await self._run(work_request, current)
            if completion is not None and not current.aborted and not self._stopping:
                await self._report_completion(current, completion)
        finally:
            self._current = None

    def _prepare(
        self,
        work_request: LenientWorkRequestResponse,
        task_type: TaskType,
        cache_directory: Path | None = None,
    ) -> tuple[BaseTask[Any], TaskContext] | WorkRequestCompletedRequest:
        """
        The task and its context for `work_request`, or the error completion that refuses it.

        A work request of another type than this worker runs, an unknown task or task data the
        task refuses (dynamic data validated even when absent: a task whose dynamic data are
        missing must not run) end there, before anything is executed.
        """
        logger.info("work request %d: %s", work_request.id, work_request.task_name)
        if work_request.task_type != task_type:
            return error_completion(
                "wrong-task-type",
                f"this worker runs {task_type} tasks, not {work_request.task_type} tasks",
            )
        try:
            task_class = BaseTask.class_from_name(task_type, work_request.task_name)
        except UnknownTaskError as error:
            return error_completion("setup-failed", str(error))
        try:
            task = task_class(work_request.task_data, work_request.dynamic_task_data or {})
        except TaskDataError as error:
            return error_completion("configure-failed", str(error))
        assert self.api is not None
        try:
            context = TaskContext.create(
                work_request.id,
                work_request.workspace,
                api_url=self.config.api_url,
                token=self.api.token,
                cache_directory=cache_directory,
            )
        except OSError as error:
            # A full disk, or an unusable temporary directory: this work request cannot run
            # here, but the worker goes on (an escaping error would leave it running forever).
            if no_space_error(error) is not None:
                return error_completion(
                    "no-space",
                    f"no space left on the worker's disk for the task directory: {error}",
                )
            return error_completion("setup-failed", f"cannot create the task directory: {error}")
        return task, context

    async def _run(
        self, work_request: LenientWorkRequestResponse, current: CurrentWorkRequest
    ) -> WorkRequestCompletedRequest | None:
        """Run the work request; return its completion report, or None to report nothing."""
        prepared = self._prepare(
            work_request, TaskType.WORKER, cache_directory=self.config.cache_dir
        )
        if isinstance(prepared, WorkRequestCompletedRequest):
            return prepared
        task, context = prepared
        try:
            try:
                current.process = TaskProcess.start(task, context)
            except OSError as error:
                return error_completion("execute-failed", f"cannot start the task: {error}")
            outcome = await current.process.wait()
            if current.aborted or self._stopping:
                logger.info("work request %d stopped; not reporting it", work_request.id)
                return None
            output_data = OutputData(runtime_statistics=outcome.runtime_statistics())
            completion = WorkRequestCompletedRequest(
                result=outcome.result.value, output_data=output_data
            )
            if outcome.result is TaskResult.ERROR:
                output_data.errors = [
                    OutputDataError(
                        code="no-space" if outcome.no_space else "execute-failed",
                        message=outcome.error_message or "unknown",
                    )
                ]
            debug_logs = remaining_debug_logs(context.debug_log_directory)
            if debug_logs:
                try:
                    # The one upload implementation is synchronous (the tasks use it from
                    # their process); a thread keeps the event loop, and the websocket, alive.
                    await asyncio.to_thread(
                        upload_debug_logs,
                        context.client(),
                        work_request.id,
                        work_request.workspace,
                        debug_logs,
                    )
                except ClientError as error:
                    completion.result = TaskResult.ERROR.value
                    output_data.errors = [
                        *(output_data.errors or []),
                        OutputDataError(code="execute-failed", message=f"debug logs: {error}"),
                    ]
            return completion
        finally:
            shutil.rmtree(context.directory, ignore_errors=True)

    async def _report_completion(
        self, current: CurrentWorkRequest, completion: WorkRequestCompletedRequest
    ) -> None:
        """Report it, retrying on transient failures; exit with status 1 if it cannot."""
        assert self.api is not None
        for delay in (*COMPLETION_RETRY_DELAYS, None):
            try:
                await self.api.complete_work_request(current.id, completion)
            except ServerError as error:
                if error.transient and delay is not None:
                    logger.warning("cannot report work request %d yet: %s", current.id, error)
                    await asyncio.sleep(delay)
                    if current.aborted or self._stopping:
                        return
                    continue
                logger.error("cannot report work request %d: %s; exiting", current.id, error)
                self.exit_code = 1
                self.request_stop()
                return
            logger.info("work request %d: %s", current.id, completion.result)
            return
