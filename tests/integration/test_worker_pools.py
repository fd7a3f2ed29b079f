"""
Issue 17 end to end: dynamic worker pools with the `local` provider and real processes.

A real server (gunicorn + uvicorn) with its scheduler, `debusine-admin provisioner run`
processes, and the `debusine-worker` daemons they start: a burst of 20 `sleep` work requests
on a pool of at most 4; an ephemeral pool; two provisioners at once; a spot interruption; a
worker that never becomes ready; a drained worker; a leaked process carrying the pool's tag.
Each scenario has a pool of its own, disabled at its end with every instance terminated, so
the next one starts from an empty machine. Assertions read the REST API, the provisioner's
printed decisions and, for what the API does not show (instances, statistics), the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from debusine.server.db.worker_pool_specs import LocalSpecification
from debusine.server.worker_pools.providers.local import LocalProvider
from debusine.testing.processes import process_is_alive
from debusine.testing.throwaway import ThrowawayError, ThrowawayInstance, throwaway_instance
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def instance(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[ThrowawayInstance]:
    from django.conf import settings

    try:
        with throwaway_instance(
            postgres_url=settings.DEBUSINE_DATABASE_URL,
            redis_url=settings.DEBUSINE_REDIS_URL,
            data_dir=tmp_path_factory.mktemp("pools"),
            name_prefix=f"test_pools_{worker_id}",
            scheduling=True,
            settings={"DEBUSINE_SCHEDULER_FALLBACK_INTERVAL": "2"},
        ) as running:
            running.admin("asset", "create_cloud_provider_account", "here", "local")
            yield running
    except ThrowawayError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def client(instance: ThrowawayInstance) -> RestUser:
    return RestUser(instance, instance.create_contributor("pools"))


@pytest.fixture(scope="module")
def database(instance: ThrowawayInstance) -> Iterator[psycopg.Connection[Any]]:
    connection = psycopg.connect(instance.database_url, autocommit=True)
    try:
        yield connection
    finally:
        connection.close()


@dataclass
class Pool:
    """One scenario's pool, and the provisioner processes started for it."""

    name: str
    instance: ThrowawayInstance
    database: psycopg.Connection[Any]
    directory: Path
    provisioners: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def value(self, sql: str, *params: Any) -> Any:
        row = self.database.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def none_connected(self) -> bool:
        return not self.value(
            "SELECT count(*) FROM db_worker w JOIN db_workerpool p ON p.id = w.worker_pool_id "
            "WHERE p.name = %s AND w.connected_at IS NOT NULL",
            self.name,
        )

    def active(self) -> int:
        return int(
            self.value(
                "SELECT count(*) FROM db_worker w JOIN db_workerpool p ON p.id = w.worker_pool_id "
                "WHERE p.name = %s AND w.instance_created_at IS NOT NULL",
                self.name,
            )
        )

    def statistics(self) -> list[tuple[str, int]]:
        rows = self.database.execute(
            "SELECT s.reason, s.work_requests FROM db_workerpoolstatistics s "
            "JOIN db_workerpool p ON p.id = s.worker_pool_id WHERE p.name = %s ORDER BY s.id",
            [self.name],
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self.value(
            "SELECT counters FROM db_workerpool WHERE name = %s", self.name
        )
        return counters

    def pass_once(self) -> str:
        return self.instance.admin("provisioner", "run", "--once")

    def start_provisioner(self, interval: float = 0.5) -> subprocess.Popen[bytes]:
        log = self.directory / f"provisioner-{len(self.provisioners)}.log"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "debusine.server.management.main",
                "provisioner",
                "run",
                "--interval",
                str(interval),
            ],
            env=self.instance.environment,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.provisioners.append(process)
        return process

    def provisioner_output(self) -> str:
        return "".join(
            path.read_text() for path in sorted(self.directory.glob("provisioner-*.log"))
        )

    def stop_provisioners(self) -> None:
        for process in self.provisioners:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        self.provisioners.clear()

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pool {self.name}: {what} did not happen within {timeout} s\n"
                    f"{self.provisioner_output()[-4000:]}"
                )
            time.sleep(0.1)

    def homes(self) -> Path:
        return self.directory / "homes"

    def local_provider(self) -> LocalProvider:
        return LocalProvider(
            LocalSpecification(api_url=self.instance.api_url, home_directory=str(self.homes())),
            data_dir=str(self.directory),
        )


@pytest.fixture
def make_pool(
    instance: ThrowawayInstance,
    database: psycopg.Connection[Any],
    tmp_path: Path,
    worker_id: str,
) -> Iterator[Callable[..., Pool]]:
    made: list[Pool] = []

    def make(
        base: str, *, ephemeral: bool = False, api_url: str | None = None, **limits: Any
    ) -> Pool:
        # Local workers of every instance share the machine: pool names (their tags) differ.
        name = f"{base}-{worker_id}"
        spec = {
            "provider_type": "local",
            "api_url": api_url or instance.api_url,
            "home_directory": str(tmp_path / "homes"),
            "log_level": "DEBUG",
            "stop_timeout_seconds": 5,
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        (tmp_path / "limits.json").write_text(json.dumps(limits))
        arguments = ["--ephemeral"] if ephemeral else []
        instance.admin(
            "worker_pool",
            "create",
            name,
            "--provider-account",
            "here",
            "--architectures",
            "amd64",
            "--specifications",
            str(tmp_path / "spec.json"),
            "--limits",
            str(tmp_path / "limits.json"),
            *arguments,
        )
        pool = Pool(name, instance, database, tmp_path)
        made.append(pool)
        return pool

    yield make

    for pool in made:
        pool.stop_provisioners()
        instance.admin("worker_pool", "disable", pool.name)
        for worker in pool.database.execute(
            "SELECT w.name FROM db_worker w JOIN db_workerpool p ON p.id = w.worker_pool_id "
            "WHERE p.name = %s AND w.instance_created_at IS NOT NULL",
            [pool.name],
        ).fetchall():
            try:
                instance.admin("worker_pool", "terminate", worker[0])
            except ThrowawayError as error:
                # A provisioner pass (the instance's Celery also consumes the provisioner
                # queue) may have terminated it between the query and this command.
                if "has no running instance" not in str(error):
                    raise
        # Whatever the database lost track of, by the pool's tag (PIDs this module started).
        provider = pool.local_provider()
        for leftover in provider.list_running(pool.name):
            provider.terminate(leftover.instance_id)
        # The module's next test shares the server: none of these workers may still be
        # connected (and so take its work) when it starts.
        pool.wait_for(pool.none_connected, "the pool's workers disconnected", timeout=60)


def sleeps(client: RestUser, count: int, seconds: int) -> list[int]:
    return [client.create("sleep", {"seconds": seconds}) for _ in range(count)]


def test_burst_scales_to_four_then_back_to_the_minimum(
    make_pool: Callable[..., Pool], client: RestUser
) -> None:
    pool = make_pool("burst", max_active_instances=4, max_idle_seconds=3)
    work_requests = sleeps(client, 20, 1)
    pool.start_provisioner()

    most = 0
    deadline = time.monotonic() + 180
    while any(client.get(wr)["status"] != "completed" for wr in work_requests):
        most = max(most, pool.active())
        assert time.monotonic() < deadline, pool.provisioner_output()[-4000:]
        time.sleep(0.2)

    assert most == 4
    assert all(client.get(wr)["result"] == "success" for wr in work_requests)
    pool.wait_for(lambda: pool.active() == 0, "the return to the minimum (0)", timeout=60)
    output = pool.provisioner_output()
    assert "launched 4 of 4" in output
    assert "max_idle_seconds 3" in output
    assert pool.counters()["launches"] == 4
    reasons = [reason for reason, _count in pool.statistics()]
    assert reasons == ["idle"] * 4
    assert sum(count for _reason, count in pool.statistics()) == 20


def test_ephemeral_pool_runs_one_work_request_per_worker(
    make_pool: Callable[..., Pool], client: RestUser
) -> None:
    pool = make_pool("ephemeral", ephemeral=True, max_active_instances=2)
    work_requests = sleeps(client, 3, 1)
    pool.start_provisioner()

    client.wait_all_completed(work_requests, timeout=180)
    pool.wait_for(lambda: len(pool.statistics()) == 3, "three ended instances")

    assert pool.statistics() == [("ephemeral", 1)] * 3


def test_two_provisioners_at_once_never_exceed_the_maximum(
    make_pool: Callable[..., Pool], client: RestUser
) -> None:
    pool = make_pool("pair", max_active_instances=3, max_idle_seconds=1)
    work_requests = sleeps(client, 9, 1)
    pool.start_provisioner(interval=0.2)
    pool.start_provisioner(interval=0.2)

    most = 0
    deadline = time.monotonic() + 180
    while any(client.get(wr)["status"] != "completed" for wr in work_requests):
        most = max(most, pool.active())
        assert time.monotonic() < deadline, pool.provisioner_output()[-4000:]
        time.sleep(0.05)

    assert most == 3
    assert pool.counters()["launches"] == 3


def test_spot_interruption_retries_the_work_elsewhere_at_once(
    make_pool: Callable[..., Pool], client: RestUser, database: psycopg.Connection[Any]
) -> None:
    pool = make_pool("spot", max_active_instances=2, max_idle_seconds=60)
    [work_request] = sleeps(client, 1, 8)
    pool.start_provisioner(interval=0.3)
    client.wait_until(work_request, "running", timeout=120)
    worker_name = database.execute(
        "SELECT w.name FROM db_workrequest wr JOIN db_worker w ON w.id = wr.worker_id "
        "WHERE wr.id = %s",
        [work_request],
    ).fetchone()
    assert worker_name is not None
    (pool.homes() / pool.name / worker_name[0] / "interruption-notice").touch()

    # Aborted and retried at once, not after the 8 s of its sleep.
    client.wait_until(work_request, "aborted", "completed", timeout=30)
    assert client.get(work_request)["status"] == "aborted"
    retry = pool.value("SELECT id FROM db_workrequest WHERE supersedes_id = %s", work_request)
    assert client.wait_until(retry, "completed", timeout=120)["result"] == "success"
    assert next(reason for reason, _ in pool.statistics()) == "interrupted"
    assert (
        f"terminated {worker_name[0]}: the provider announced an interruption"
        in pool.provisioner_output()
    )


def test_worker_that_never_becomes_ready_triggers_back_off_not_a_loop(
    make_pool: Callable[..., Pool],
) -> None:
    # Nothing answers on port 9 of the loopback: the worker never registers.
    pool = make_pool(
        "broken",
        api_url="http://127.0.0.1:9/api",
        min_active_instances=1,
        max_active_instances=2,
        register_timeout_seconds=2,
    )
    pool.start_provisioner(interval=0.3)
    pool.wait_for(lambda: pool.counters().get("launch_failures", 0) >= 1, "a failed launch")
    time.sleep(5)  # many passes: none may launch again during the back-off (30 s)

    assert pool.counters()["launches"] == 1
    assert pool.counters()["launch_failures"] == 1
    assert "backs off until" in pool.provisioner_output()


def test_drained_worker_finishes_its_work_then_is_terminated(
    make_pool: Callable[..., Pool], client: RestUser, instance: ThrowawayInstance
) -> None:
    pool = make_pool("drain", max_active_instances=1, max_idle_seconds=600)
    [work_request] = sleeps(client, 1, 5)
    pool.start_provisioner(interval=0.3)
    client.wait_until(work_request, "running", timeout=120)
    worker = pool.value(
        "SELECT w.name FROM db_workrequest wr JOIN db_worker w ON w.id = wr.worker_id "
        "WHERE wr.id = %s",
        work_request,
    )
    instance.admin("worker_pool", "drain", worker)

    pool.wait_for(lambda: pool.statistics() != [], "the drained worker's termination")

    assert client.get(work_request)["result"] == "success"
    assert pool.statistics() == [("drained", 1)]
    # It was terminated only once its work request had completed.
    assert pool.value(
        "SELECT wr.completed_at <= s.ended_at FROM db_workrequest wr, db_workerpoolstatistics s "
        "JOIN db_workerpool p ON p.id = s.worker_pool_id WHERE wr.id = %s AND p.name = %s",
        work_request,
        pool.name,
    )
    assert f"terminated {worker}: drained and idle" in pool.provisioner_output()


def test_leaked_process_carrying_the_pool_tag_is_swept(
    make_pool: Callable[..., Pool], tmp_path: Path
) -> None:
    pool = make_pool("leaky")
    leaked = subprocess.Popen(
        ["sleep", "600"],
        env={**os.environ, "DEBUSINE_WORKER_POOL": pool.name},
        start_new_session=True,
    )
    try:
        output = pool.pass_once()
        assert f"swept leaked instance local:{leaked.pid}:" in output
        leaked.wait(timeout=30)
        assert not process_is_alive(leaked.pid)
    finally:
        if leaked.poll() is None:
            leaked.kill()
            leaked.wait()


def test_exhausted_budget_launches_nothing_and_says_why(
    make_pool: Callable[..., Pool], client: RestUser
) -> None:
    pool = make_pool("budget", max_active_instances=2, target_max_seconds_per_month=0)
    # Last in the module: its work request stays pending.
    sleeps(client, 1, 0)

    output = pool.pass_once()

    assert "monthly budget is used up: 0 of 0 s (target_max_seconds_per_month)" in output
    assert pool.active() == 0
    assert pool.counters().get("launches", 0) == 0
