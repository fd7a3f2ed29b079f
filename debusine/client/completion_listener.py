"""
`on-work-request-completed`: run a command for each work request that completes.

Listens on `{api}/ws/1.0/work-request/on-completed/` (protocol.md §3.2) and runs
`COMMAND... ID RESULT` for each `work_request_completed` frame. With a cursor file, the
`completed_at` of the last handled event is saved there (`{"last_completed_at": ...}`) and sent
as `completed_at_since` on every (re)connection, so nothing completed while the listener was
away is missed. A lost connection is retried after a random 1-6 seconds, forever; a rejection
(bad token, unknown workspace) ends the command.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import pydantic
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect

from debusine.client.client import DebusineClient
from debusine.client.errors import ClientError, LocalFileError, UsageError
from debusine.protocol.work_requests import WorkRequestCompletedFrame

RECONNECT_DELAY = (1.0, 6.0)
PING_INTERVAL = 60.0


def read_cursor(path: Path | None) -> str | None:
    """The saved `last_completed_at`, or None when there is no file yet."""
    if path is None or not path.exists():
        return None
    try:
        value = json.loads(path.read_text())["last_completed_at"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path} is not a last-completed-at file: {error}") from None
    if not isinstance(value, str):
        raise UsageError(f"{path}: last_completed_at is not a string")
    return value


def write_cursor(path: Path, completed_at: str) -> None:
    temporary = path.with_name(f".{path.name}.new")
    try:
        temporary.write_text(json.dumps({"last_completed_at": completed_at}) + "\n")
        temporary.replace(path)
    except OSError as error:
        # Not a lost connection (run_forever would reconnect and retry forever): stop.
        raise LocalFileError.from_os_error(error, path, "write") from None


class CompletionListener:
    """Runs `command` for each completed work request, until rejected or interrupted."""

    def __init__(
        self,
        client: DebusineClient,
        command: list[str],
        *,
        workspaces: list[str] | None = None,
        cursor_file: Path | None = None,
        log: IO[str] = sys.stderr,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.command = command
        self.workspaces = workspaces or []
        self.cursor_file = cursor_file
        self.log = log
        self.sleep = sleep

    def url(self) -> str:
        query: dict[str, str] = {}
        if self.workspaces:
            query["workspaces"] = ",".join(self.workspaces)
        since = read_cursor(self.cursor_file)
        if since is not None:
            query["completed_at_since"] = since
        url = self.client.websocket_url("work-request/on-completed/")
        return f"{url}?{urlencode(query)}" if query else url

    def run_forever(self) -> None:
        while True:
            try:
                self.listen_once()
            except (OSError, WebSocketException) as error:
                reason = (
                    f"HTTP {error.response.status_code}"
                    if isinstance(error, InvalidStatus)
                    else str(error) or type(error).__name__
                )
                print(f"connection to {self.client.api_url} lost: {reason}", file=self.log)
            self.sleep(random.uniform(*RECONNECT_DELAY))  # noqa: S311 (spreading reconnections)

    def listen_once(self) -> None:
        """One connection: handle its frames until it closes."""
        with connect(
            self.url(),
            additional_headers=self.client.headers(),
            open_timeout=30,
            ping_interval=PING_INTERVAL,
        ) as websocket:
            for raw in websocket:
                self.handle(json.loads(raw))

    def handle(self, frame: dict[str, Any]) -> None:
        if frame.get("type") in ("connection_rejected", "connection_closed"):
            raise ClientError(f"the server refused to listen: {frame.get('reason', 'no reason')}")
        if frame.get("text") != "work_request_completed":
            return
        try:
            event = WorkRequestCompletedFrame.model_validate(frame)
        except pydantic.ValidationError as error:
            print(f"ignored an invalid event: {error.errors()[0]['msg']}", file=self.log)
            return
        argv = [*self.command, str(event.work_request_id), event.result]
        try:
            completed = subprocess.run(argv, check=False)
        except OSError as error:
            raise UsageError(f"cannot run {self.command[0]}: {error.strerror}") from None
        if completed.returncode != 0:
            print(f"{' '.join(argv)} exited with {completed.returncode}", file=self.log)
        if self.cursor_file is not None:
            write_cursor(self.cursor_file, str(frame["completed_at"]))
