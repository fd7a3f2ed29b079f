"""
Issue 3 end to end: a real server (gunicorn + uvicorn), the Celery scheduler and beat, and two
real `debusine-worker` daemons, on real PostgreSQL and a private Redis server.

The scenarios: noop success and failure; a self-registered worker refused until an admin
enables it; priorities (then FIFO) and allow/deny lists; `kill -9` of a worker mid-task (its
lease expires, the work is retried on the other worker, its late completion is ignored); abort
of a running task; a Redis restart; two scheduler processes side by side.

The instance runs with a short lease grace period and fallback interval so that recovery shows
within seconds. Its Redis is a `redis-server` of this module's own (never the machine's shared
one), because one scenario stops and restarts it. Assertions read the REST API, the daemons'
logs and, for what the API does not show (output data, retries), the instance's database.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from debusine.testing.devstack import ProcessSpec, Supervisor, scheduler_argv
from debusine.testing.processes import process_is_alive
from debusine.testing.redis_server import PrivateRedis
from debusine.testing.throwaway import ThrowawayError, ThrowawayInstance, throwaway_instance
from debusine.testing.worker import (
    LOG_CONNECTED,
    LOG_REGISTERED,
    LOG_REJECTED,
    WorkerProcess,
    start_worker,
)
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.integration

#: Seconds a worker may be out of touch before its running work is retried elsewhere.
LEASE_GRACE = 5
#: Seconds between fallback scheduling passes (they re-send lost notifications).
FALLBACK_INTERVAL = 2

WORKER_NAMES = ("alpha", "beta")


# --- The instance, its database and a user ----------------------------------------------------


@pytest.fixture(scope="module")
def instance(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str, private_redis: PrivateRedis
) -> Iterator[ThrowawayInstance]:
    from django.conf import settings

    try:
        with throwaway_instance(
            postgres_url=settings.DEBUSINE_DATABASE_URL,
            redis_url=private_redis.url,
            data_dir=tmp_path_factory.mktemp("end-to-end"),
            name_prefix=f"test_e2e_{worker_id}",
            scheduling=True,
            settings={
                "DEBUSINE_WORKER_LEASE_GRACE": str(LEASE_GRACE),
                "DEBUSINE_SCHEDULER_FALLBACK_INTERVAL": str(FALLBACK_INTERVAL),
                # Every pass goes through the scheduler processes (Celery, Redis): what these
                # scenarios are about. Other integration tests run passes in-process.
                "DEBUSINE_SCHEDULER_PASS_IN_PROCESS": "false",
                # Passes log their assignments at DEBUG level: scenarios count them.
                "DEBUSINE_LOG_LEVEL": "DEBUG",
            },
        ) as running:
            yield running
    except ThrowawayError as error:
        pytest.fail(str(error))


class Database:
    """Read-only questions to the instance's database that the REST API does not answer."""

    def __init__(self, url: str) -> None:
        self.connection = psycopg.connect(url, autocommit=True)

    def value(self, sql: str, *params: Any) -> Any:
        row = self.connection.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def worker_id(self, daemon: WorkerProcess) -> int:
        """The id of the worker registered with the daemon's token."""
        assert daemon.token is not None
        token_hash = hashlib.sha256(daemon.token.encode()).hexdigest()
        worker_id = self.value(
            "SELECT w.id FROM db_worker w JOIN db_token t ON t.id = w.token_id WHERE t.hash = %s",
            token_hash,
        )
        assert isinstance(worker_id, int), f"no worker has the token of {daemon.config_dir}"
        return worker_id

    def worker_name(self, daemon: WorkerProcess) -> str:
        name = self.value("SELECT name FROM db_worker WHERE id = %s", self.worker_id(daemon))
        assert isinstance(name, str)
        return name

    def output_data(self, work_request_id: int) -> dict[str, Any]:
        data = self.value("SELECT output_data FROM db_workrequest WHERE id = %s", work_request_id)
        return data or {}

    def retry_of(self, work_request_id: int) -> int | None:
        """The work request that supersedes this one (its retry), if any."""
        retry: int | None = self.value(
            "SELECT id FROM db_workrequest WHERE supersedes_id = %s", work_request_id
        )
        return retry

    def superseded_among(self, work_request_ids: list[int]) -> list[int]:
        rows = self.connection.execute(
            "SELECT supersedes_id FROM db_workrequest WHERE supersedes_id = ANY(%s)",
            [work_request_ids],
        ).fetchall()
        return [row[0] for row in rows]


@pytest.fixture(scope="module")
def database(instance: ThrowawayInstance) -> Iterator[Database]:
    opened = Database(instance.database_url)
    try:
        yield opened
    finally:
        opened.connection.close()


@pytest.fixture(scope="module")
def client(instance: ThrowawayInstance) -> RestUser:
    return RestUser(instance, instance.create_contributor("end-to-end"))


# --- The worker daemons -----------------------------------------------------------------------


@dataclass
class Workers:
    """The module's two enabled worker daemons, by name; a killed one can be restarted."""

    instance: ThrowawayInstance
    database: Database
    directories: dict[str, Path]
    daemons: dict[str, WorkerProcess] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, activation_token: str | None = None) -> WorkerProcess:
        daemon = start_worker(
            self.instance.api_url, self.directories[name], activation_token=activation_token
        )
        self.daemons[name] = daemon
        return daemon

    def name_of(self, worker_id: int) -> str:
        [name] = [name for name, known in self.ids.items() if known == worker_id]
        return name

    def all(self) -> list[WorkerProcess]:
        return list(self.daemons.values())

    def log_lines(self) -> list[str]:
        return [
            line for daemon in self.daemons.values() for line in daemon.log_text().splitlines()
        ]

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every daemon; return their exit statuses."""
        return {name: daemon.stop() for name, daemon in self.daemons.items()}


@pytest.fixture(scope="module")
def workers(
    instance: ThrowawayInstance, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    pool = Workers(
        instance,
        database,
        {name: tmp_path_factory.mktemp(f"worker-{name}") for name in WORKER_NAMES},
    )
    try:
        for name in WORKER_NAMES:
            activation = instance.create_worker_activation(f"{name}.example")
            pool.start(name, activation_token=activation)
        for name, daemon in pool.daemons.items():
            daemon.wait_for_log(LOG_CONNECTED)
            pool.ids[name] = database.worker_id(daemon)
        wait_for_dynamic_metadata(database, list(pool.ids.values()))
        yield pool
    finally:
        statuses = pool.stop_all()
    assert statuses == dict.fromkeys(WORKER_NAMES, 0), "a worker did not stop cleanly"


def wait_for_dynamic_metadata(database: Database, worker_ids: list[int]) -> None:
    """Wait until each worker has reported its metadata: only then can it be given tasks."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reported = database.value(
            "SELECT count(*) FROM db_worker WHERE id = ANY(%s) "
            "AND dynamic_metadata_updated_at IS NOT NULL",
            worker_ids,
        )
        if reported == len(worker_ids):
            return
        time.sleep(0.05)
    pytest.fail(f"workers {worker_ids} did not report their dynamic metadata")


@pytest.fixture
def static_metadata(
    instance: ThrowawayInstance, workers: Workers, tmp_path: Path
) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Set a worker's static metadata with `debusine-admin`; cleared again afterwards."""
    changed: set[str] = set()

    def set_metadata(name: str, metadata: dict[str, Any]) -> None:
        source = tmp_path / f"{name}-{uuid.uuid4().hex}.json"
        source.write_text(json.dumps(metadata), encoding="utf-8")
        worker_name = workers.database.worker_name(workers.daemons[name])
        instance.admin("worker", "edit_metadata", worker_name, "--set", str(source))
        changed.add(name)

    yield set_metadata
    for name in changed:
        set_metadata(name, {})


def task_process_ids(daemon: WorkerProcess) -> list[int]:
    """PIDs of the daemon's live child processes (the task it runs), from /proc."""
    children: list[int] = []
    for threads_children in Path(f"/proc/{daemon.pid}/task").glob("*/children"):
        try:
            children.extend(int(pid) for pid in threads_children.read_text().split())
        except FileNotFoundError:
            continue
    return [pid for pid in children if process_is_alive(pid)]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def reported_results(lines: list[str], work_request_id: int) -> list[str]:
    """The completions a daemon logged for a work request ("work request N: success")."""
    pattern = re.compile(rf"work request {work_request_id}: (success|failure|error)$")
    return [match[1] for line in lines if (match := pattern.search(line))]


def wait_for_reports(
    daemons: list[WorkerProcess], work_request_ids: list[int], timeout: float = 10
) -> dict[int, list[str]]:
    """
    The completions the daemons logged for each work request, once each has one: a daemon
    logs its report just after the server has recorded it.
    """
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for daemon in daemons for line in daemon.log_text().splitlines()]
        reports = {wr_id: reported_results(lines, wr_id) for wr_id in work_request_ids}
        if all(reports.values()) or time.monotonic() > deadline:
            return reports
        time.sleep(0.05)


def logged_assignments(log: Path, offset: int = 0) -> int:
    """Work requests a scheduler's passes logged (at DEBUG level) as assigned after `offset`."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    # Django's logging configuration writes the line once (Celery's handler repeats it).
    pattern = r" debusine\.server\.scheduler\.passes: scheduling pass: (\d+) assigned"
    return sum(int(count) for count in re.findall(pattern, text))


# --- The scenarios ----------------------------------------------------------------------------


def test_noop_success_and_failure(client: RestUser, workers: Workers, database: Database) -> None:
    succeeded_id = client.create("noop", {"result": True})
    failed_id = client.create("noop", {"result": False})
    succeeded, failed = client.wait_all_completed([succeeded_id, failed_id], timeout=30)

    assert (succeeded["result"], failed["result"]) == ("success", "failure")
    for work_request in (succeeded, failed):
        assert work_request["worker"] in workers.ids.values()
        statistics = database.output_data(work_request["id"])["runtime_statistics"]
        assert isinstance(statistics["duration"], int)
        assert isinstance(statistics["cpu_time"], int)
        assert 0 <= statistics["duration"] <= work_request["duration"] + 1
        assert wait_for_reports(workers.all(), [work_request["id"]]) == {
            work_request["id"]: [work_request["result"]]
        }
    # Only the failure leaves a debug log behind: its stages.log, uploaded as an artifact.
    assert succeeded["artifacts"] == []
    [artifact_id] = failed["artifacts"]
    artifact = client.call("GET", f"/1.0/artifact/{artifact_id}/")
    assert artifact["category"] == "debusine:work-request-debug-logs"
    assert list(artifact["files"]) == ["stages.log"]
    stages_log = client.session.get(artifact["files"]["stages.log"]["url"], timeout=10)
    assert "run: finished, returned False" in stages_log.text


def test_disabled_worker_is_refused_until_enabled_then_runs_work(
    instance: ThrowawayInstance,
    client: RestUser,
    workers: Workers,
    database: Database,
    tmp_path: Path,
) -> None:
    newcomer = start_worker(instance.api_url, tmp_path)
    try:
        newcomer.wait_for_log(LOG_REGISTERED)
        # Refused, and refused again on its next attempt: it keeps trying.
        newcomer.wait_for_log(LOG_REJECTED, count=2)
        newcomer_id = database.worker_id(newcomer)
        assert (
            database.value("SELECT connected_at FROM db_worker WHERE id = %s", newcomer_id) is None
        )
        # Work goes to the enabled workers only.
        noop_id = client.create("noop", {})
        assert client.wait_until(noop_id, "completed")["worker"] in workers.ids.values()

        output = instance.admin("worker", "enable", database.worker_name(newcomer))
        assert output.startswith("Enabled worker ")
        newcomer.wait_for_log(LOG_CONNECTED, timeout=15)
        wait_for_dynamic_metadata(database, [newcomer_id])

        # Three sleeps for three idle workers: one each, the newcomer included.
        sleep_ids = [client.create("sleep", {"seconds": 2}) for _ in range(3)]
        sleeps = client.wait_all_completed(sleep_ids, timeout=30)
        assert {sleep["result"] for sleep in sleeps} == {"success"}
        assert {sleep["worker"] for sleep in sleeps} == {*workers.ids.values(), newcomer_id}
        [newcomer_sleep] = [sleep["id"] for sleep in sleeps if sleep["worker"] == newcomer_id]
        assert wait_for_reports([newcomer], [newcomer_sleep]) == {newcomer_sleep: ["success"]}
    finally:
        assert newcomer.stop() == 0


def test_priorities_then_fifo_and_deny_list(
    client: RestUser,
    workers: Workers,
    static_metadata: Callable[[str, dict[str, Any]], None],
) -> None:
    # beta refuses every task, so alpha alone runs them: one at a time, queue order.
    static_metadata("beta", {"tasks_denylist": ["noop", "sleep"]})
    sleep_id = client.create("sleep", {"seconds": 4})
    assert client.wait_until(sleep_id, "running")["worker"] == workers.ids["alpha"]

    adjustments = [0, -2, 0, -1, -2]
    noop_ids = [client.create("noop", {}) for _ in adjustments]
    for noop_id, adjustment in zip(noop_ids, adjustments, strict=True):
        if adjustment:
            client.call(
                "PATCH", f"/1.0/work-request/{noop_id}/", json={"priority_adjustment": adjustment}
            )
    assert client.get(sleep_id)["status"] == "running", "the sleep ended too early"
    assert {client.get(noop_id)["status"] for noop_id in noop_ids} == {"pending"}

    noops = client.wait_all_completed(noop_ids, timeout=30)
    assert {noop["worker"] for noop in noops} == {workers.ids["alpha"]}
    started_order = [noop["id"] for noop in sorted(noops, key=lambda noop: noop["started_at"])]
    # Highest effective priority first; equal priorities in creation order.
    assert started_order == [noop_ids[0], noop_ids[2], noop_ids[3], noop_ids[1], noop_ids[4]]


def test_allow_lists(
    client: RestUser,
    workers: Workers,
    static_metadata: Callable[[str, dict[str, Any]], None],
) -> None:
    static_metadata("alpha", {"tasks_allowlist": ["noop"]})
    static_metadata("beta", {"tasks_allowlist": ["sleep"]})
    sleep_ids = [client.create("sleep", {"seconds": 1}) for _ in range(2)]
    noop_ids = [client.create("noop", {}) for _ in range(2)]

    done = client.wait_all_completed([*sleep_ids, *noop_ids], timeout=30)
    assert [work_request["worker"] for work_request in done] == [
        workers.ids["beta"],
        workers.ids["beta"],
        workers.ids["alpha"],
        workers.ids["alpha"],
    ]


def test_killed_worker_work_is_retried_on_the_other_one(
    instance: ThrowawayInstance, client: RestUser, workers: Workers, database: Database
) -> None:
    sleep_id = client.create("sleep", {"seconds": 2})
    victim_name = workers.name_of(client.wait_until(sleep_id, "running")["worker"])
    [survivor_name] = [name for name in WORKER_NAMES if name != victim_name]
    victim = workers.daemons[victim_name]
    wait_for(lambda: bool(task_process_ids(victim)), 10, "the sleep task's process")
    [task_pid] = task_process_ids(victim)

    killed_at = time.monotonic()
    assert victim.kill() == -signal.SIGKILL
    # The task dies with its daemon.
    wait_for(lambda: not process_is_alive(task_pid), 5, "the orphaned task to die")

    old = client.wait_until(sleep_id, "aborted", timeout=LEASE_GRACE + 10)
    assert old["result"] == ""
    [error] = database.output_data(sleep_id)["errors"]
    assert error["code"] == "worker-failed"
    retry_id = database.retry_of(sleep_id)
    assert retry_id is not None
    retry = client.wait_until(
        retry_id, "completed", timeout=LEASE_GRACE + 10 - (time.monotonic() - killed_at)
    )
    recovered_in = time.monotonic() - killed_at
    assert (retry["result"], retry["worker"]) == ("success", workers.ids[survivor_name])
    assert recovered_in <= LEASE_GRACE + 10
    print(f"kill -9 -> retry completed on the other worker in {recovered_in:.1f} s")

    # The killed worker's late report is answered 200 and changes nothing.
    response = requests.put(
        f"{instance.api_url}/1.0/work-request/{sleep_id}/completed/",
        json={"result": "success", "output_data": {"runtime_statistics": {"duration": 2}}},
        headers={"token": victim.token or ""},
        timeout=10,
    )
    assert (response.status_code, response.content) == (200, b"")
    assert client.get(sleep_id) == old
    assert client.get(retry_id) == retry

    # Restarted with the same configuration (and token), it is back in service, and nothing
    # is run twice.
    restarted = workers.start(victim_name)
    restarted.wait_for_log(LOG_CONNECTED, count=victim.log_text().count(LOG_CONNECTED) + 1)
    assert wait_for_reports(workers.all(), [retry_id]) == {retry_id: ["success"]}
    assert reported_results(workers.log_lines(), sleep_id) == []
    assert database.retry_of(retry_id) is None


def test_abort_stops_the_task_process(
    instance: ThrowawayInstance, client: RestUser, workers: Workers
) -> None:
    sleep_id = client.create("sleep", {"seconds": 60})
    runner = workers.daemons[workers.name_of(client.wait_until(sleep_id, "running")["worker"])]
    wait_for(lambda: bool(task_process_ids(runner)), 10, "the sleep task's process")
    [task_pid] = task_process_ids(runner)

    aborted = client.call("POST", f"/1.0/work-request/{sleep_id}/abort/", json={})
    assert aborted["status"] == "aborted"
    wait_for(lambda: not process_is_alive(task_pid), 10, "the aborted task's process to end")
    runner.wait_for_log(f"work request {sleep_id} stopped; not reporting it")
    assert runner.process.poll() is None

    # Nothing is reported for it, and the worker goes on with other work.
    noop_ids = [client.create("noop", {}) for _ in WORKER_NAMES]
    client.wait_all_completed(noop_ids, timeout=30)
    assert reported_results(workers.log_lines(), sleep_id) == []
    assert f"/work-request/{sleep_id}/completed/" not in instance.log.read_text()
    final = client.get(sleep_id)
    assert (final["status"], final["result"]) == ("aborted", "")


def test_redis_restart_loses_no_work_request(
    instance: ThrowawayInstance,
    client: RestUser,
    workers: Workers,
    database: Database,
    private_redis: PrivateRedis,
) -> None:
    server_log_offset = instance.log.stat().st_size
    scheduler_log = instance.data_dir / "scheduler.log"
    scheduler_log_offset = scheduler_log.stat().st_size
    private_redis.stop()
    try:
        started = time.monotonic()
        while_down = [client.create("noop", {}) for _ in range(3)]
        creation_seconds = (time.monotonic() - started) / len(while_down)
    finally:
        private_redis.start()
    restarted_at = time.monotonic()
    # The restarted Redis has forgotten the workers' Channels groups too: the notifications
    # of these assignments may be lost until the consumers join again.
    right_after = [client.create("noop", {}) for _ in range(3)]

    created = [*while_down, *right_after]
    done = client.wait_all_completed(created, timeout=30)
    recovered_in = time.monotonic() - restarted_at
    print(
        f"Redis down: creating a work request took {creation_seconds * 1000:.0f} ms; "
        f"all done {recovered_in:.1f} s after the restart"
    )
    assert {work_request["result"] for work_request in done} == {"success"}
    assert database.superseded_among(created) == []
    reports = wait_for_reports(workers.all(), created)
    assert reports == {wr_id: ["success"] for wr_id in created}
    # The server did lose the scheduling requests of the first ones.
    server_log = instance.log.read_bytes()[server_log_offset:].decode(errors="replace")
    assert server_log.count("could not queue a scheduling pass") >= len(while_down)
    # The scheduler (which runs beat as a thread) reconnected rather than died.
    assert instance.process_pids("scheduler")
    assert logged_assignments(scheduler_log, scheduler_log_offset) > 0


def test_two_schedulers_never_assign_a_work_request_twice(
    instance: ThrowawayInstance, client: RestUser, workers: Workers, database: Database
) -> None:
    first_log = instance.data_dir / "scheduler.log"
    first_offset = first_log.stat().st_size
    second_log = instance.data_dir / "scheduler-2.log"
    argv = scheduler_argv()
    # Its own Celery node name (scheduler_argv() names it after the calling process).
    argv[argv.index("--hostname") + 1] = f"scheduler-second-{uuid.uuid4().hex[:8]}@%h"
    second = Supervisor()
    second.start(ProcessSpec("scheduler-2", argv), env=instance.environment, output=second_log)
    try:
        wait_for(lambda: b"[tasks]" in second_log.read_bytes(), 30, "the second scheduler")
        # Busy workers take their next work request themselves as they report one, so a
        # scheduler assigns only what arrives while workers are idle: noops in pairs, until
        # both schedulers have assigned some...
        noop_ids: list[int] = []
        while not (logged_assignments(first_log, first_offset) and logged_assignments(second_log)):
            assert len(noop_ids) < 100, "one of the schedulers never assigned anything"
            pair = [client.create("noop", {}) for _ in WORKER_NAMES]
            client.wait_all_completed(pair, timeout=30)
            noop_ids.extend(pair)
        # ... then a burst, with both consuming the scheduling requests it causes.
        noop_ids.extend(client.create("noop", {}) for _ in range(30))
        done = client.wait_all_completed(noop_ids, timeout=60)
    finally:
        second.stop_all()

    print(
        f"{len(noop_ids)} noops; assigned by the first scheduler "
        f"{logged_assignments(first_log, first_offset)}, by the second "
        f"{logged_assignments(second_log)}, the rest as workers asked for more"
    )
    assert {work_request["result"] for work_request in done} == {"success"}
    assert {work_request["worker"] for work_request in done} <= set(workers.ids.values())
    # None was taken from a worker and retried, ...
    assert database.superseded_among(noop_ids) == []
    # ... each was reported once, and fetched by one worker once (the daemon logs the task
    # name as it starts it).
    assert wait_for_reports(workers.all(), noop_ids) == {wr_id: ["success"] for wr_id in noop_ids}
    lines = workers.log_lines()
    for noop_id in noop_ids:
        assert sum(line.endswith(f"work request {noop_id}: noop") for line in lines) == 1
    assert "Traceback" not in second_log.read_text()
