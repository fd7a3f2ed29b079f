"""
A running work request's log, followed live in a browser: a protocol-level worker (as a
Debusine 0.16 worker does) streams `log_data` frames over its websocket while it "runs" a
`sleep`; the page shows each piece as it arrives, then says the work request finished.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from debusine.testing.throwaway import ThrowawayInstance
from tests.integration.raw_worker import RawWorker
from tests.integration.test_web_ui_browser import browser, screenshot, sign_in_as
from tests.integration.test_worker_websocket import create_work_request, enabled_worker

__all__ = ["browser"]

USERNAME = "live-log-user"


@pytest.fixture(scope="module")
def user_token(instance: ThrowawayInstance) -> str:
    return instance.create_contributor(USERNAME)


def log_frame(work_request_id: int, data: str) -> str:
    return json.dumps(
        {
            "type": "log_data",
            "work_request_id": work_request_id,
            "stream": "stdout",
            "data": data,
            "timestamp": "2026-12-03T12:00:00+00:00",
        }
    )


def live_text(browser: WebDriver) -> str:
    return str(browser.find_element(By.ID, "live-log").text)


def test_watch_a_running_sleeps_log_grow_live(
    instance: ThrowawayInstance, user_token: str, browser: WebDriver
) -> None:
    sign_in_as(browser, instance, USERNAME)

    async def scenario() -> None:
        async with RawWorker(instance.api_url) as worker:
            await enabled_worker(instance, worker, "live-logger")
            await worker.connect()
            await worker.wait_for("request_dynamic_metadata")
            await worker.send_metadata()
            work_request_id = create_work_request(
                instance, user_token, task_name="sleep", task_data={"seconds": 30}
            )
            await worker.wait_for("work_request_available")
            status, body = await worker.call("GET", "work-request/get-next-for-worker/")
            assert (status, body["id"]) == (200, work_request_id)
            assert worker.websocket is not None

            url = f"{instance.base_url}/debusine/System/work-request/{work_request_id}/"
            await asyncio.to_thread(browser.get, url)
            assert browser.find_element(By.ID, "banner").text.startswith("Running on live-logger")

            for number in (1, 2, 3):
                await worker.websocket.send_str(log_frame(work_request_id, f"slept {number}\n"))
                await asyncio.to_thread(
                    WebDriverWait(browser, 15).until,
                    lambda b, n=number: f"slept {n}" in live_text(b),
                )
            # Not reloaded: the same page grew.
            assert live_text(browser).splitlines() == ["slept 1", "slept 2", "slept 3"]
            await asyncio.to_thread(screenshot, browser, "live-log")

            # A frame about a work request that is not running here is ignored.
            await worker.websocket.send_str(log_frame(work_request_id + 1000, "stray\n"))
            await worker.websocket.send_str(
                json.dumps(
                    {"type": "log_data_end", "work_request_id": work_request_id, "exit_code": 0}
                )
            )
            status, _ = await worker.call(
                "PUT",
                f"work-request/{work_request_id}/completed/",
                {"result": "success", "output_data": {"runtime_statistics": {"duration": 3}}},
            )
            assert status == 200
            await asyncio.to_thread(
                WebDriverWait(browser, 20).until,
                lambda b: b.find_element(By.ID, "banner").text.startswith("Finished (success)"),
            )
            cookies = {cookie["name"]: cookie["value"] for cookie in browser.get_cookies()}
            stray = requests.get(
                f"{instance.base_url}/debusine/System/work-request/{work_request_id + 1000}/"
                "live-log/",
                cookies=cookies,
                timeout=10,
            )
            assert stray.status_code == 404

    asyncio.run(scenario())
