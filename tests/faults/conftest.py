"""
The fault matrix's stack: a whole instance on a PostgreSQL and a Redis of its own.

One stack per module (`fault_stack`): a private PostgreSQL cluster and a private, persistent
Redis on spare ports (faults stop, restart and kill them: never the machine's shared ones), a
throwaway instance on them with two server processes, the scheduler (beat as a thread) and a
Celery worker for orchestration, and one worker daemon whose task directories live on a small
tmpfs (the disk-full row fills it). A thread plays systemd's `Restart=on-failure`: every
process of the instance that dies is started again (`Supervisor.check_once`).

After each fault, `FaultStack.assert_recovered` checks what the table promises: the system
answers and runs new work within the grace period plus 10 s (measured and printed), no work
request is left pending or running, and every file a store is said to hold is there with the
right size and SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from debusine.testing.devstack import GaveUpError
from debusine.testing.embedded import EmbeddedServiceError, PrivatePostgres
from debusine.testing.filesystems import SmallFilesystem, small_filesystem
from debusine.testing.redis_server import PrivateRedis, RedisServerError
from debusine.testing.throwaway import ThrowawayError, ThrowawayInstance, throwaway_instance
from debusine.testing.worker import LOG_CONNECTED, WorkerProcess, start_worker
from tests.integration.rest_user import RestUser

#: The lease grace period of the stack (seconds): recovery must take at most this plus 10 s.
LEASE_GRACE = 6
RECOVERY_BUDGET = LEASE_GRACE + 10
#: The test report property that carries a fault's recovery time to the summary.
RECOVERY_PROPERTY = "fault_recovery_seconds"
#: The worker's task directories: a tmpfs of this size.
WORKER_DISK_SIZE = 4 * 1024 * 1024


class Restarter:
    """A thread that restarts the instance's processes that die, like systemd would."""

    def __init__(self, instance: ThrowawayInstance) -> None:
        self.instance = instance
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="restarter", daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(0.1):
            try:
                self.instance.supervisor.check_once()
            except GaveUpError as error:
                self.error = error
                return

    def __enter__(self) -> Restarter:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.thread.join()


@dataclass
class FaultStack:
    """The running stack and what the faults act on."""

    instance: ThrowawayInstance
    postgres: PrivatePostgres
    redis: PrivateRedis
    restarter: Restarter
    client: RestUser
    token: str
    worker_dir: Path
    worker_disk: SmallFilesystem
    activation: str
    worker: WorkerProcess | None = None
    #: Recovery time of each fault, by row name, for the closing summary.
    recoveries: dict[str, float] = field(default_factory=dict)
    #: The current test's `record_property` (set by the `stack` fixture).
    record: Callable[[str, object], None] | None = None

    def database(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.instance.database_url, autocommit=True)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.database() as connection:
            return connection.execute(sql, params).fetchall()

    def start_worker(self) -> WorkerProcess:
        """
        (Re)start the worker daemon and wait until it is connected. Started again, it keeps
        its configuration directory, so it uses the token it registered the first time.
        """
        connected_before = self.worker.log_text().count(LOG_CONNECTED) if self.worker else 0
        worker = start_worker(
            self.instance.api_url,
            self.worker_dir,
            activation_token=self.activation,
            environment={"TMPDIR": str(self.worker_disk.directory)},
        )
        self.worker = worker
        worker.wait_for_log(LOG_CONNECTED, timeout=60, count=connected_before + 1)
        return worker

    def answers(self) -> bool:
        try:
            response = requests.get(f"{self.instance.api_url}/1.0/whoami/", timeout=2)
        except requests.RequestException:
            return False
        return response.status_code == 200

    def wait_until_answering(self, since: float, budget: float = RECOVERY_BUDGET) -> float:
        """Seconds from `since` until the API answers again; fail past the budget."""
        while not self.answers():
            assert time.monotonic() - since < budget, "the API did not answer again in time"
            time.sleep(0.1)
        return time.monotonic() - since

    def assert_recovered(self, row: str, since: float, *created: int) -> float:
        """
        After the fault at `since` (monotonic): a new work request completes, every work
        request of `created` ends (completed, or aborted with a completed retry), none is left
        pending or running, within the budget; every stored file is whole. Return the recovery
        time (printed, and kept in `recoveries`).
        """
        self.wait_until_answering(since)
        probe = self.create_until_accepted("noop", {}, since)
        deadline = since + RECOVERY_BUDGET
        for work_request_id in (*created, probe):
            self.wait_until_ended(work_request_id, deadline)
        recovered = time.monotonic() - since
        self.recoveries[row] = recovered
        print(f"fault {row}: back and running new work {recovered:.1f} s after the fault")
        if self.record is not None:
            # Shown at the end of the run, also from xdist workers (pytest_terminal_summary).
            self.record(RECOVERY_PROPERTY, (row, round(recovered, 1)))
        assert recovered <= RECOVERY_BUDGET
        self.assert_nothing_stuck(deadline)
        self.assert_store_is_whole()
        assert self.restarter.error is None, self.restarter.error
        return recovered

    def create_until_accepted(
        self, task_name: str, task_data: dict[str, Any], since: float
    ) -> int:
        """Create a work request, retrying while the server cannot take it yet."""
        body = {"task_name": task_name, "task_data": task_data, "event_reactions": {}}
        while True:
            with contextlib.suppress(requests.RequestException):
                response = self.client.session.post(
                    f"{self.instance.api_url}/1.0/work-request/", json=body, timeout=10
                )
                if response.status_code in (200, 201):
                    work_request_id: int = response.json()["id"]
                    return work_request_id
            assert time.monotonic() - since < RECOVERY_BUDGET, "no work request accepted"
            time.sleep(0.2)

    def final_state(self, work_request_id: int) -> tuple[str, str, int | None]:
        """(status, result, id of the retry superseding it)."""
        [row] = self.query(
            "SELECT wr.status, wr.result, retry.id FROM db_workrequest wr "
            "LEFT JOIN db_workrequest retry ON retry.supersedes_id = wr.id WHERE wr.id = %s",
            work_request_id,
        )
        return str(row[0]), str(row[1]), row[2]

    def wait_until_ended(self, work_request_id: int, deadline: float) -> str:
        """Wait until it completed (or was aborted and its retry completed); its result."""
        current = work_request_id
        while True:
            status, result, retry = self.final_state(current)
            if status == "completed":
                return result
            if status == "aborted" and retry is not None:
                current = retry
                continue
            assert time.monotonic() < deadline, (
                f"work request {work_request_id} (now {current}) is still {status}"
                f"\n{self.worker.log_text()[-3000:] if self.worker else ''}"
            )
            time.sleep(0.1)

    def assert_nothing_stuck(self, deadline: float) -> None:
        """No work request pending or running (beyond `deadline`: they had their chance)."""
        while stuck := self.query(
            "SELECT id, status FROM db_workrequest WHERE status IN ('pending', 'running')"
        ):
            assert time.monotonic() < deadline + 5, f"stuck work requests: {stuck}"
            time.sleep(0.1)

    def assert_store_is_whole(self) -> None:
        """Every file the Default store is said to hold is there, whole, with its hash."""
        store = self.instance.data_dir / "store"
        rows = self.query(
            "SELECT f.sha256, f.size FROM db_fileinstore fs JOIN db_file f ON f.id = fs.file_id "
            "JOIN db_filestore s ON s.id = fs.store_id WHERE s.name = 'Default'"
        )
        for sha256, size in rows:
            digest = bytes(sha256).hex()
            path = store / digest[0:2] / digest[2:4] / digest[4:6] / f"{digest}-{size}"
            data = path.read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest), path
        leftovers = [path for path in store.rglob(".*") if path.is_file()]
        assert leftovers == [], f"temporary files left in the store: {leftovers}"


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    postgres = PrivatePostgres.create("debusine-test-faults-")
    redis = PrivateRedis(tmp_path_factory.mktemp("redis"), persistent=True)
    data_dir = tmp_path_factory.mktemp("faults")
    try:
        postgres.init()
        postgres.start()
        redis.start()
        with (
            throwaway_instance(
                postgres_url=postgres.url(),
                redis_url=redis.url,
                data_dir=data_dir,
                name_prefix="test_faults",
                workers=2,
                scheduling=True,
                workflows=True,
                settings={
                    "DEBUSINE_WORKER_LEASE_GRACE": str(LEASE_GRACE),
                    "DEBUSINE_SCHEDULER_FALLBACK_INTERVAL": "5",
                },
            ) as instance,
            small_filesystem(data_dir / "worker-disk", WORKER_DISK_SIZE) as disk,
            Restarter(instance) as restarter,
        ):
            token = instance.create_contributor("faults")
            stack = FaultStack(
                instance=instance,
                postgres=postgres,
                redis=redis,
                restarter=restarter,
                client=RestUser(instance, token),
                token=token,
                worker_dir=data_dir / "worker",
                worker_disk=disk,
                activation=instance.create_worker_activation("faults.example"),
            )
            stack.worker_dir.mkdir()
            stack.start_worker()
            try:
                yield stack
            finally:
                if stack.worker is not None:
                    stack.worker.stop()
                print(
                    "fault recovery times: "
                    + ", ".join(
                        f"{row} {seconds:.1f} s" for row, seconds in stack.recoveries.items()
                    )
                )
    except (ThrowawayError, EmbeddedServiceError, RedisServerError) as error:
        pytest.fail(str(error))
    finally:
        redis.stop()
        postgres.remove()


@pytest.fixture
def stack(
    fault_stack: FaultStack, record_property: Callable[[str, object], None]
) -> Iterator[FaultStack]:
    """The module's stack, recording this test's recovery times in its report."""
    fault_stack.record = record_property
    try:
        yield fault_stack
    finally:
        fault_stack.record = None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the recovery time of every fault injected in this run."""
    measured = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == RECOVERY_PROPERTY
    ]
    if measured:
        terminalreporter.section("fault recovery times (budget: lease grace + 10 s)")
        for row, seconds in sorted(measured):
            terminalreporter.write_line(f"{row}: {seconds:.1f} s (budget {RECOVERY_BUDGET} s)")
