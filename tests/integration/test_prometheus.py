"""
Debian's `prometheus` scrapes a real server with deploy/prometheus/debusine.yml.

The server runs two gunicorn workers with DEBUSINE_METRICS_TOKEN set; Prometheus uses the
example's `authorization` with a credentials file and the OpenMetrics format it asks for. The
series are read back through Prometheus's HTTP API: a work request created over REST, requests
counted whichever server process answered them, and every Grafana panel's query evaluates.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml

from debusine.testing.processes import free_port
from debusine.testing.throwaway import ThrowawayError, ThrowawayInstance, throwaway_instance
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "debusine.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
#: Seconds to wait for Prometheus to start and scrape what a test looks for.
TIMEOUT = 90


@pytest.fixture(scope="module")
def metrics_token() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str, metrics_token: str
) -> Iterator[ThrowawayInstance]:
    from django.conf import settings

    try:
        with throwaway_instance(
            postgres_url=settings.DEBUSINE_DATABASE_URL,
            redis_url=settings.DEBUSINE_REDIS_URL,
            data_dir=tmp_path_factory.mktemp("prometheus-server"),
            name_prefix=f"test_prometheus_{worker_id}",
            workers=2,
            settings={"DEBUSINE_METRICS_TOKEN": metrics_token},
        ) as instance:
            yield instance
            prefix = instance.environment["DEBUSINE_REDIS_KEY_PREFIX"]
            client = redis.Redis.from_url(settings.DEBUSINE_REDIS_URL)
            keys = list(client.scan_iter(f"{prefix}:metrics:*"))
            if keys:
                client.delete(*keys)
    except ThrowawayError as error:
        pytest.fail(str(error))


def prometheus_config(server: ThrowawayInstance, token_file: Path) -> dict[str, Any]:
    """The example configuration, pointed at `server` and scraping every second."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    job["scheme"] = "http"
    job["scrape_interval"] = "1s"
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [server.base_url.removeprefix("http://")]}]
    job["authorization"]["credentials_file"] = str(token_file)
    return config


@pytest.fixture(scope="module")
def prometheus(
    server: ThrowawayInstance, metrics_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A Prometheus scraping `server`; its base URL."""
    directory = tmp_path_factory.mktemp("prometheus")
    token_file = directory / "token"
    token_file.write_text(metrics_token + "\n")
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(prometheus_config(server, token_file)))
    check = subprocess.run(
        ["promtool", "check", "config", str(config_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_file}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for_value(prometheus: str, expr: str, expected: float) -> None:
    """Wait until `expr` gives one series of value `expected`."""
    deadline = time.monotonic() + TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = query(prometheus, expr)
        except requests.ConnectionError:
            last = "Prometheus not answering yet"
        else:
            if len(last) == 1 and float(last[0]["value"][1]) == expected:
                return
        time.sleep(0.5)
    pytest.fail(f"{expr} never gave {expected}; last answer: {last}")


def test_prometheus_scrapes_the_server(server: ThrowawayInstance, prometheus: str) -> None:
    user = RestUser(server, server.create_contributor("watcher"))
    user.create("noop", {"result": True})
    for _ in range(7):
        assert requests.get(f"{server.api_url}/1.0/service-status/", timeout=10).ok
    # The token is required: without it the server refuses to answer.
    assert requests.get(f"{server.api_url}/1.0/open-metrics/", timeout=10).status_code == 401

    wait_for_value(prometheus, 'up{job="debusine"}', 1)
    wait_for_value(
        prometheus,
        'debusine_work_requests{task_name="noop", status="pending", host_architecture="none"}',
        1,
    )
    # Seven requests, answered by either of the two server processes, all counted.
    wait_for_value(
        prometheus,
        'sum(debusine_http_request_duration_seconds_count{endpoint="api-service-status"})',
        7,
    )


def test_every_dashboard_query_evaluates(server: ThrowawayInstance, prometheus: str) -> None:
    wait_for_value(prometheus, 'up{job="debusine"}', 1)
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "1m")
                # A syntax error or a type error (e.g. rate() of a gauge) fails `query`.
                query(prometheus, expr)
