"""The REST calls a user makes in the integration and compatibility tests: one client for all."""

from __future__ import annotations

import time
from typing import Any

import requests

from debusine.protocol.work_requests import WorkRequestResponse
from debusine.testing.throwaway import ThrowawayInstance


class RestUser:
    """A user token talking to a throwaway instance's API; any answer but 200/201 fails."""

    def __init__(self, instance: ThrowawayInstance, token: str) -> None:
        self.api_url = instance.api_url
        self.session = requests.Session()
        self.session.headers["Token"] = token

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def create(self, task_name: str, task_data: dict[str, Any]) -> int:
        """Create a work request as the `debusine` client does; return its id."""
        body = {"task_name": task_name, "task_data": task_data, "event_reactions": {}}
        work_request_id: int = self.call("POST", "/1.0/work-request/", json=body)["id"]
        return work_request_id

    def get(self, work_request_id: int) -> dict[str, Any]:
        """The WorkRequest object as sent, after checking it against the protocol's model."""
        work_request: dict[str, Any] = self.call("GET", f"/1.0/work-request/{work_request_id}/")
        WorkRequestResponse.model_validate(work_request)
        return work_request

    def wait_until(self, work_request_id: int, *statuses: str, timeout: float = 30) -> Any:
        """The work request once its status is one of `statuses`; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            work_request = self.get(work_request_id)
            if work_request["status"] in statuses or time.monotonic() > deadline:
                assert work_request["status"] in statuses, work_request
                return work_request
            time.sleep(delay)
            # Quick answers for quick tasks, without a request every 50 ms during a build.
            delay = min(delay * 1.2, 0.5)

    def wait_all_completed(self, work_request_ids: list[int], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        return [
            self.wait_until(work_request_id, "completed", timeout=deadline - time.monotonic())
            for work_request_id in work_request_ids
        ]
