"""
Work created while Redis is down starts as soon as Redis is back, not at the fallback pass.

A real server, its scheduler and beat, and one real worker daemon, on a private Redis that the
test stops and starts again on the same port. Twice: with work assigned in the creating
request's process (the default: the assignment is made, the notification is lost), and with
every pass going through the scheduler process (the request for a pass is lost with the
broker). The fallback pass is set to 10 minutes: whatever brings the work request to the
worker within seconds of Redis's return is the recovery under test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from debusine.testing.redis_server import PrivateRedis
from debusine.testing.throwaway import ThrowawayError, ThrowawayInstance, throwaway_instance
from debusine.testing.worker import LOG_CONNECTED, WorkerProcess, start_worker
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.integration

#: Far longer than the test waits: the fallback pass must not be what recovers.
FALLBACK_INTERVAL = 600
#: How long after Redis's return the work request may take to complete.
RECOVERY_TIMEOUT = 15


@pytest.fixture(scope="module", params=["in-process", "scheduler"])
def instance(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    worker_id: str,
    private_redis: PrivateRedis,
) -> Iterator[ThrowawayInstance]:
    from django.conf import settings

    in_process = request.param == "in-process"

    try:
        with throwaway_instance(
            postgres_url=settings.DEBUSINE_DATABASE_URL,
            redis_url=private_redis.url,
            data_dir=tmp_path_factory.mktemp("redis-recovery"),
            name_prefix=f"test_redis_recovery_{request.param.replace('-', '_')}_{worker_id}",
            scheduling=True,
            settings={
                "DEBUSINE_SCHEDULER_FALLBACK_INTERVAL": str(FALLBACK_INTERVAL),
                "DEBUSINE_SCHEDULER_PASS_IN_PROCESS": str(in_process).lower(),
            },
        ) as running:
            yield running
    except ThrowawayError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def worker(
    instance: ThrowawayInstance, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    activation = instance.create_worker_activation("redis-recovery.example")
    daemon = start_worker(
        instance.api_url, tmp_path_factory.mktemp("worker"), activation_token=activation
    )
    try:
        daemon.wait_for_log(LOG_CONNECTED)
        yield daemon
    finally:
        daemon.stop()


def test_work_created_while_redis_is_down_starts_once_it_is_back(
    instance: ThrowawayInstance, worker: WorkerProcess, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    client = RestUser(instance, instance.create_contributor("redis-recovery"))
    # Everything works with Redis up.
    client.wait_all_completed([client.create("noop", {})], timeout=30)

    private_redis.stop()
    try:
        created = client.create("noop", {})
        # Nobody could tell the worker (or, through the scheduler, even assign it).
        time.sleep(2)
        assert client.get(created)["status"] in ("pending", "running")
    finally:
        private_redis.start()
    back_at = time.monotonic()

    [done] = client.wait_all_completed([created], timeout=RECOVERY_TIMEOUT)
    print(f"completed {time.monotonic() - back_at:.1f} s after Redis came back")
    assert done["result"] == "success"
