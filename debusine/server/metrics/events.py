"""
Events that processes observe (a request served, a scheduling pass, bytes uploaded), summed
in Redis across every process of every machine.

Why Redis, and not prometheus_client's multiprocess mode: the server runs several gunicorn
workers and Celery processes, possibly on several machines behind one address. A scrape reaches
any one of them, and must see every process's events: Redis is shared by all of them already,
and nothing has to clean up files of dead processes.

Observations cost their caller no round trip: each process adds them up in memory, and a
thread of its own writes the sums to Redis every FLUSH_INTERVAL seconds (one pipeline), and at
exit. A scrape flushes its own process first; other processes' last second may be missing.
Losing Redis resets these counters to zero, which Prometheus treats as a counter reset. The
counts that must survive (work requests, their queue and run times) are kept in PostgreSQL
instead (`debusine.server.db.models.metrics`).

Layout: one Redis hash per family, `{DEBUSINE_REDIS_KEY_PREFIX}:metrics:{family}`. Fields are
the JSON list of label values, followed by `|le=<bound>` for a histogram bucket (the bucket
the value fell in, not cumulative) or `|sum`; a counter's field is its labels alone.

Recording never fails its caller: when Redis does not answer, the sums are dropped (and a
warning logged at most once a minute), and the process stops trying for RETRY_AFTER_FAILURE
seconds.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
from django.conf import settings

from debusine.server.metrics import families
from debusine.server.redis_clients import shared_client

logger = logging.getLogger(__name__)

#: Seconds between two warnings about Redis not answering.
WARNING_INTERVAL = 60.0
#: Seconds during which a process records nothing after Redis failed to answer.
RETRY_AFTER_FAILURE = 5.0
#: Seconds between two writes of a process's observations to Redis.
FLUSH_INTERVAL = 1.0
_last_warning = 0.0
_suspended_until = 0.0

# What this process observed since its last flush: (Redis key, hash field) -> amount.
_lock = threading.Lock()
_pending: defaultdict[tuple[str, str], float] = defaultdict(float)
#: The process whose flush thread runs (a forked child starts its own).
_flusher_pid: int | None = None


def redis_client() -> redis.Redis:
    """Quick to give up: a request never waits long for its metrics."""
    return shared_client(timeout=1)


def family_key(family: str) -> str:
    return f"{settings.DEBUSINE_REDIS_KEY_PREFIX}:metrics:{family}"


def bucket_of(value: float, bounds: Sequence[float]) -> str:
    """The upper bound of the bucket `value` falls in (`+Inf` above the last one)."""
    for bound in bounds:
        if value <= bound:
            return repr(float(bound))
    return "+Inf"


def _labels_field(labels: Sequence[str]) -> str:
    return json.dumps(list(labels), separators=(",", ":"))


def _recording_suspended() -> bool:
    return time.monotonic() < _suspended_until


def _warn(error: Exception) -> None:
    global _last_warning, _suspended_until
    now = time.monotonic()
    _suspended_until = now + RETRY_AFTER_FAILURE
    if now - _last_warning >= WARNING_INTERVAL:
        _last_warning = now
        logger.warning("metrics: could not record an event in Redis: %s", error)


def _add(key: str, field: str, amount: float) -> None:
    global _flusher_pid
    with _lock:
        if _flusher_pid != os.getpid():
            # First observation of this process (or of a child forked from one that had
            # observed: what it inherited is its parent's to write).
            _pending.clear()
            _flusher_pid = os.getpid()
            threading.Thread(target=_flush_forever, name="metrics-flush", daemon=True).start()
            atexit.register(flush)
        _pending[(key, field)] += amount


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        flush()


def flush() -> None:
    """Write what this process observed to Redis now (dropped if Redis does not answer)."""
    with _lock:
        if not _pending:
            return
        pending = dict(_pending)
        _pending.clear()
    if _recording_suspended():
        return
    try:
        pipeline = redis_client().pipeline(transaction=False)
        for (key, field_name), amount in pending.items():
            pipeline.hincrbyfloat(key, field_name, amount)
        pipeline.execute()
    except (redis.RedisError, OSError) as error:
        _warn(error)


def observe(family: str, bounds: Sequence[float], labels: Sequence[str], value: float) -> None:
    """Add `value` to histogram `family` (label values in the family's order)."""
    labels_field = _labels_field(labels)
    key = family_key(family)
    _add(key, f"{labels_field}|le={bucket_of(value, bounds)}", 1)
    _add(key, f"{labels_field}|sum", value)


def increment(family: str, labels: Sequence[str], amount: float = 1) -> None:
    """Add `amount` to counter `family`."""
    _add(family_key(family), _labels_field(labels), amount)


# --- What the server records ---------------------------------------------------------------


def request_served(endpoint: str, method: str, seconds: float) -> None:
    """An HTTP request to the route named `endpoint` took `seconds` to answer."""
    method = method if method in families.HTTP_METHODS else families.OTHER
    observe(
        families.HTTP_REQUEST_SECONDS,
        families.REQUEST_SECONDS_BUCKETS,
        (endpoint, method),
        seconds,
    )


def scheduling_pass_ran(kind: str, seconds: float) -> None:
    """A scheduling pass of `kind` (families.PASS_KINDS) took `seconds`."""
    observe(families.SCHEDULER_PASS_SECONDS, families.SCHEDULER_SECONDS_BUCKETS, (kind,), seconds)


def work_dispatched(kind: str, seconds: float) -> None:
    """A pass of `kind` ended `seconds` after a change asked for it."""
    observe(
        families.DISPATCH_LATENCY_SECONDS, families.SCHEDULER_SECONDS_BUCKETS, (kind,), seconds
    )


def bytes_uploaded(count: int) -> None:
    """`count` bytes of file content were received."""
    if count > 0:
        increment(families.UPLOAD_BYTES, (), count)


# --- Reading them back ------------------------------------------------------------------------


@dataclass
class HistogramData:
    """One histogram's series: per label values, the (non-cumulative) bucket counts and sum."""

    buckets: dict[tuple[str, ...], dict[str, float]] = field(default_factory=dict)
    sums: dict[tuple[str, ...], float] = field(default_factory=dict)


def read_histogram(raw: dict[bytes, bytes]) -> HistogramData:
    data = HistogramData()
    for raw_field, raw_value in raw.items():
        labels_field, _, part = raw_field.decode().rpartition("|")
        labels = tuple(json.loads(labels_field))
        value = float(raw_value)
        if part == "sum":
            data.sums[labels] = value
        elif part.startswith("le="):
            data.buckets.setdefault(labels, {})[part[3:]] = value
    return data


def read_counter(raw: dict[bytes, bytes]) -> dict[tuple[str, ...], float]:
    return {
        tuple(json.loads(raw_field.decode())): float(raw_value)
        for raw_field, raw_value in raw.items()
    }


def read_families(names: Sequence[str]) -> list[dict[bytes, bytes]]:
    """The raw hashes of `names`, in one round trip (empty ones when Redis does not answer)."""
    try:
        pipeline = redis_client().pipeline(transaction=False)
        for name in names:
            pipeline.hgetall(family_key(name))
        results: list[dict[bytes, bytes]] = pipeline.execute()
        return results
    except (redis.RedisError, OSError) as error:
        _warn(error)
        return [{} for _name in names]


def celery_queue_lengths(queues: Sequence[str]) -> dict[str, int] | None:
    """
    Messages waiting in each Celery queue (None when Redis does not answer).

    Kombu's Redis transport keeps a queue as lists: the queue's name, and one per priority
    step (`name\\x06\\x16N`); all are counted.
    """
    prefix = f"{settings.DEBUSINE_REDIS_KEY_PREFIX}:celery:"
    steps = ["", *(f"\x06\x16{step}" for step in range(1, 10))]
    try:
        pipeline = redis_client().pipeline(transaction=False)
        for queue in queues:
            for step in steps:
                pipeline.llen(f"{prefix}{queue}{step}")
        lengths: list[int] = pipeline.execute()
    except (redis.RedisError, OSError) as error:
        _warn(error)
        return None
    return {
        queue: sum(lengths[index * len(steps) : (index + 1) * len(steps)])
        for index, queue in enumerate(queues)
    }
