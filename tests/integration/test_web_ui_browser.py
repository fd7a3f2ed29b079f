"""
The web UI in a real browser: Selenium drives Debian's Chromium (headless) against a real
server (gunicorn + uvicorn on a throwaway database), through the scenarios people use.

Data is made the way users make it (the REST API with a token, `debusine-admin`); the only
direct database writes give the test user a password, mark a work request failed (what a
worker would report) and make one a manual-unblock step (what a workflow would create).
Screenshots of the main pages go to `screenshots/web-ui/` under the source tree (gitignored) so
a person can look at them.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from django.contrib.auth.hashers import make_password
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from debusine.testing.throwaway import ThrowawayInstance
from tests.integration.conftest import LiveServer
from tests.integration.rest_user import RestUser

PASSWORD = "web ui test password"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots" / "web-ui"
LOG = "".join(f"step {n}: {'FAILED to fetch' if n == 37 else 'ok'}\n" for n in range(1, 201))


def set_password(database_url: str, username: str) -> None:
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "UPDATE db_user SET password = %s WHERE username = %s",
            (make_password(PASSWORD), username),
        )


def mark_failed(server: LiveServer, work_request_id: int) -> None:
    """What a worker's failed completion leaves behind."""
    with psycopg.connect(server.instance.database_url) as connection:
        connection.execute(
            "UPDATE db_workrequest SET status = 'completed', result = 'failure', "
            "started_at = now(), completed_at = now() WHERE id = %s",
            (work_request_id,),
        )


def make_manual_unblock(server: LiveServer, work_request_id: int) -> None:
    """What a workflow's approval step is: blocked until a reviewer decides."""
    with psycopg.connect(server.instance.database_url) as connection:
        connection.execute(
            "UPDATE db_workrequest SET status = 'blocked', unblock_strategy = 'manual' "
            "WHERE id = %s",
            (work_request_id,),
        )


def upload_artifact(server: LiveServer, files: dict[str, bytes], workspace: str = "System") -> int:
    user = RestUser(server.instance, server.token)
    body = {
        "category": "debusine:test",
        "workspace": workspace,
        "data": {},
        "files": {
            path: {
                "size": len(contents),
                "checksums": {"sha256": hashlib.sha256(contents).hexdigest()},
                "type": "file",
            }
            for path, contents in files.items()
        },
    }
    artifact_id: int = user.call("POST", "/1.0/artifact/", json=body)["id"]
    for path, contents in files.items():
        response = user.session.put(
            f"{server.api_url}/1.0/artifact/{artifact_id}/files/{path}/", data=contents, timeout=30
        )
        assert response.status_code in (200, 201), response.text
    return artifact_id


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium through Debian's chromedriver."""
    driver_path = shutil.which("chromedriver")
    binary = shutil.which("chromium")
    assert driver_path and binary, "apt-get install chromium chromium-driver (make test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def signed_in(browser: WebDriver, debusine_server: LiveServer) -> WebDriver:
    sign_in(browser, debusine_server, debusine_server.username)
    return browser


def screenshot(browser: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_follow_a_noop_from_the_list_to_its_detail(
    signed_in: WebDriver, debusine_server: LiveServer
) -> None:
    browser = signed_in
    work_request_id = RestUser(debusine_server.instance, debusine_server.token).create(
        "noop", {"result": True}
    )
    browser.get(f"{debusine_server.base_url}/debusine/System/")
    screenshot(browser, "workspace")
    browser.find_element(By.LINK_TEXT, "Work requests").click()
    screenshot(browser, "work-request-list")
    browser.find_element(By.LINK_TEXT, str(work_request_id)).click()
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith(
        f"Work request {work_request_id}: noop"
    )
    assert browser.current_url.endswith(f"/debusine/System/work-request/{work_request_id}/")
    screenshot(browser, "work-request-detail")
    # The API's url field is this very page.
    api = RestUser(debusine_server.instance, debusine_server.token).get(work_request_id)
    assert browser.current_url == debusine_server.base_url + api["url"]


def test_retry_a_failed_work_request(signed_in: WebDriver, debusine_server: LiveServer) -> None:
    browser = signed_in
    user = RestUser(debusine_server.instance, debusine_server.token)
    failed = user.create("noop", {"result": False})
    user.call("POST", f"/1.0/work-request/{failed}/abort/")  # nothing runs it in this test
    mark_failed(debusine_server, failed)
    browser.get(f"{debusine_server.base_url}/debusine/System/work-request/{failed}/")
    assert browser.find_element(By.ID, "wr-result").text == "failure"
    browser.find_element(By.ID, "retry").click()
    heading = browser.find_element(By.TAG_NAME, "h1").text
    new_id = int(re.match(r"Work request (\d+)", heading)[1])  # type: ignore[index]
    assert new_id != failed
    assert user.get(new_id)["status"] == "pending"
    assert "retried as" in browser.find_element(By.CLASS_NAME, "messages").text


def test_review_and_accept_a_manual_unblock_step(
    signed_in: WebDriver, debusine_server: LiveServer
) -> None:
    browser = signed_in
    user = RestUser(debusine_server.instance, debusine_server.token)
    step = user.create("noop", {"result": True})
    make_manual_unblock(debusine_server, step)
    browser.get(f"{debusine_server.base_url}/debusine/System/work-request/{step}/")
    browser.find_element(By.ID, "review-notes").send_keys("checked by a person")
    browser.find_element(By.ID, "review-accept").click()
    assert "Accepted" in browser.find_element(By.CLASS_NAME, "messages").text
    assert browser.find_element(By.ID, "wr-status").text == "pending"
    assert "checked by a person" in browser.find_element(By.ID, "review-log").text
    assert not browser.find_elements(By.ID, "review-form")
    screenshot(browser, "manual-unblock-review")
    [entry] = user.get(step)["workflow_data"]["manual_unblock"]["log"]
    assert entry["action"] == "accept"


def test_open_an_artifacts_log_search_it_and_open_a_line_range(
    signed_in: WebDriver, debusine_server: LiveServer
) -> None:
    browser = signed_in
    artifact_id = upload_artifact(debusine_server, {"build.log": LOG.encode()})
    browser.get(f"{debusine_server.base_url}/debusine/System/artifact/{artifact_id}/")
    screenshot(browser, "artifact")
    browser.find_element(By.LINK_TEXT, "build.log").click()
    assert browser.find_element(By.ID, "L200").text.endswith("step 200: ok")
    screenshot(browser, "log")

    search = browser.find_element(By.ID, "search")
    search.send_keys("failed")
    search.submit()
    assert "1 matching line of 200" in browser.find_element(By.ID, "match-count").text
    assert browser.find_element(By.ID, "L37").text.endswith("FAILED to fetch")
    assert not browser.find_elements(By.ID, "L36")

    browser.get(
        f"{debusine_server.base_url}/debusine/System/artifact/{artifact_id}/file/build.log#L10-20"
    )
    browser.refresh()  # the range survives a reload
    selected = browser.find_elements(By.CSS_SELECTOR, ".line.selected")
    assert [element.get_attribute("id") for element in selected] == [
        f"L{n}" for n in range(10, 21)
    ]
    screenshot(browser, "log-range")
    # Clicking a line number, then shift-clicking another, selects that range.
    browser.find_element(By.CSS_SELECTOR, "#L3 .ln").click()
    webdriver.ActionChains(browser).key_down("\ue008").click(
        browser.find_element(By.CSS_SELECTOR, "#L5 .ln")
    ).key_up("\ue008").perform()
    assert browser.current_url.endswith("#L3-5")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".line.selected")) == 3
    raw = browser.find_element(By.ID, "raw").get_attribute("href")
    assert raw is not None
    assert requests.get(raw, timeout=10, headers={"Token": debusine_server.token}).text == LOG


def test_create_and_revoke_a_token(signed_in: WebDriver, debusine_server: LiveServer) -> None:
    browser = signed_in
    browser.find_element(By.ID, "nav-tokens").click()
    browser.find_element(By.ID, "comment").send_keys("from the browser")
    browser.find_element(By.ID, "create-token").click()
    key = browser.find_element(By.ID, "new-token-key").text
    screenshot(browser, "tokens")
    whoami = f"{debusine_server.api_url}/1.0/whoami/"
    assert (
        requests.get(whoami, headers={"Token": key}, timeout=10).json()["user"]
        == debusine_server.username
    )
    row = browser.find_element(By.XPATH, "//tr[td[text()='from the browser']]")
    row.find_element(By.CLASS_NAME, "disable").click()
    refused = requests.get(whoami, headers={"Token": key}, timeout=10)
    assert refused.status_code in (401, 403), refused.text
    row = browser.find_element(By.XPATH, "//tr[td[text()='from the browser']]")
    row.find_element(By.CLASS_NAME, "delete").click()
    assert not browser.find_elements(By.XPATH, "//tr[td[text()='from the browser']]")


def sign_in_as(browser: WebDriver, instance: ThrowawayInstance, username: str) -> None:
    """Give `username` a password, then sign in with the form."""
    set_password(instance.database_url, username)
    browser.delete_all_cookies()
    browser.get(f"{instance.base_url}/-/signin/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in-submit").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "sign-out"))


def sign_in(browser: WebDriver, server: LiveServer, username: str) -> None:
    sign_in_as(browser, server.instance, username)


def test_private_workspace_is_invisible_to_another_user(
    browser: WebDriver, debusine_server: LiveServer
) -> None:
    server = debusine_server
    server.admin("workspace", "create", "debusine/hidden-web", "--private")
    server.admin(
        "workspace", "grant_role", "hidden-web", "viewer", f"{server.username}-contributors"
    )
    server.admin("create_user", "outsider-web", "outsider@example.org")
    url = f"{server.base_url}/debusine/hidden-web/"

    sign_in(browser, server, server.username)
    browser.get(f"{server.base_url}/")
    assert "debusine/hidden-web" in browser.find_element(By.TAG_NAME, "main").text
    browser.get(url)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Workspace debusine/hidden-web")

    sign_in(browser, server, "outsider-web")
    browser.get(f"{server.base_url}/")
    assert "hidden-web" not in browser.find_element(By.TAG_NAME, "main").text
    cookies = {cookie["name"]: cookie["value"] for cookie in browser.get_cookies()}
    for page in (url, url + "work-request/"):
        assert requests.get(page, cookies=cookies, timeout=10).status_code == 404
        browser.get(page)
        assert "Not Found" in browser.find_element(By.TAG_NAME, "body").text


def test_workers_and_queue_pages(browser: WebDriver, debusine_server: LiveServer) -> None:
    RestUser(debusine_server.instance, debusine_server.token).create("noop", {"result": True})
    browser.get(f"{debusine_server.base_url}/-/queue/")
    assert int(browser.find_element(By.ID, "pending-total").text) >= 1
    screenshot(browser, "queue")
    browser.get(f"{debusine_server.base_url}/-/workers/")
    screenshot(browser, "workers")
    browser.find_element(By.ID, "worker-pools-link").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Worker pools"
    screenshot(browser, "worker-pools")


def test_banner_follows_the_work_request_until_it_ends(
    signed_in: WebDriver, debusine_server: LiveServer
) -> None:
    browser = signed_in
    user = RestUser(debusine_server.instance, debusine_server.token)
    work_request_id = user.create("noop", {"result": True})
    browser.get(f"{debusine_server.base_url}/debusine/System/work-request/{work_request_id}/")
    banner = browser.find_element(By.ID, "banner")
    assert banner.text.startswith("Pending.")
    user.call("POST", f"/1.0/work-request/{work_request_id}/abort/")
    # The page polls the status: the banner turns "finished" without a reload.
    WebDriverWait(browser, 20).until(
        lambda b: b.find_element(By.ID, "banner").text.startswith("Finished")
    )
    assert browser.find_element(By.ID, "reload").is_displayed()
    screenshot(browser, "work-request-finished")


def test_search_a_workflows_logs(signed_in: WebDriver, debusine_server: LiveServer) -> None:
    browser = signed_in
    user = RestUser(debusine_server.instance, debusine_server.token)
    work_request_id = user.create("noop", {"result": True})
    browser.get(
        f"{debusine_server.base_url}/debusine/System/work-request/{work_request_id}/logs/search/"
    )
    query = browser.find_element(By.ID, "q")
    query.send_keys("anything")
    query.submit()
    assert (
        "0 files with matches among 0 searched"
        in browser.find_element(By.ID, "search-summary").text
    )
