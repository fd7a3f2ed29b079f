"""
Read replicas: read-only requests read from a PostgreSQL streaming replica when one is fit.

With DEBUSINE_DATABASE_REPLICA_URLS set, every replica is a Django database alias
(`replica_0`, `replica_1`, ...) and `ReplicaRouter` decides, query by query, where reads go.
Outside a request (scheduler, Celery, websockets, `debusine-admin`) and in any request that is
not eligible, everything goes to the primary (`default`). A request is eligible when:

- it is a GET or HEAD, outside the worker-only endpoints (`WORKER_PATHS`);
- its caller did not write within DEBUSINE_DATABASE_REPLICA_PIN_SECONDS (read-your-writes: a
  write pins the token, session or client address in Redis for that long);
- some replica is fit: it answers, streams from the primary, and has replayed what it received
  or is at most DEBUSINE_DATABASE_REPLICA_MAX_LAG seconds behind. Each process checks at most
  once every DEBUSINE_DATABASE_REPLICA_CHECK_INTERVAL seconds (a connection of its own).

An eligible request goes back to the primary for the rest of its life as soon as it writes or
turns out to come from a worker (`use_primary`); tokens and sessions are always read from the
primary, so that a token or login made a moment ago is never refused. A replica that fails
during a request (stopped, restarted) is marked unfit and the request is answered again from
the primary: a client sees the latency, never the failure.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.core.signals import got_request_exception
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from debusine.server.redis_clients import shared_client

logger = logging.getLogger(__name__)

#: Paths only workers call: always answered from the primary (they assign and write).
WORKER_PATHS = ("/api/1.0/work-request/get-next-for-worker/", "/api/1.0/worker/")
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})
#: Models always read from the primary: what authenticates a request must be current.
PRIMARY_ONLY_MODELS = frozenset({"db.token", "sessions.session"})
#: Seconds the lag check and the pin lookup may take before the primary is used instead.
CHECK_TIMEOUT = 1
REDIS_TIMEOUT = 0.5
#: SQL run on a replica: its lag in seconds, or NULL when it does not stream from the primary.
#: Everything received replayed counts as no lag (an idle primary writes nothing to replay,
#: so the age of the last replayed transaction would grow forever).
LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN NULL
    WHEN NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN NULL
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
END
"""


#: Database aliases of read replicas: `replica_0`, `replica_1`, ...
REPLICA_ALIAS_PREFIX = "replica_"


def replica_aliases(replica_urls: list[str]) -> list[str]:
    """The database aliases of the configured replicas, in order (settings use it too)."""
    return [f"{REPLICA_ALIAS_PREFIX}{index}" for index in range(len(replica_urls))]


def configured_aliases() -> list[str]:
    return replica_aliases(settings.DEBUSINE_DATABASE_REPLICA_URLS)


# --- Per-request routing state ---------------------------------------------------------------


@dataclass
class RequestRoute:
    """Where the current request reads; shared by every thread that serves it."""

    replica: str | None
    wrote: bool = False
    replica_failed: bool = False


_route: contextvars.ContextVar[RequestRoute | None] = contextvars.ContextVar(
    "debusine_replica_route", default=None
)


def current_replica() -> str | None:
    """The replica the current request reads from, or None (the primary)."""
    route = _route.get()
    return route.replica if route is not None else None


def use_primary() -> None:
    """Read from the primary for the rest of the current request (no-op outside requests)."""
    route = _route.get()
    if route is not None:
        route.replica = None


class ReplicaRouter:
    """Django database router: reads of eligible requests to their replica, the rest to primary."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        route = _route.get()
        if route is None or route.replica is None:
            return DEFAULT_DB_ALIAS
        if model._meta.label_lower in PRIMARY_ONLY_MODELS:
            return DEFAULT_DB_ALIAS
        return route.replica

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        route = _route.get()
        if route is not None:
            # Reads after a write must see it: the primary from now on.
            route.wrote = True
            route.replica = None
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        # Every alias is the same database (a replica is a copy of the primary).
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS


# --- Replica health ---------------------------------------------------------------------------


@dataclass
class ReplicaHealth:
    """What this process last learnt about one replica."""

    fit: bool = False
    lag: float | None = None
    checked_at: float = float("-inf")
    reason: str = "not checked yet"


@dataclass
class HealthBoard:
    """The health of every replica, checked at most once per interval per process."""

    health: dict[str, ReplicaHealth] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fit_replicas(self, aliases: list[str], now: float | None = None) -> list[str]:
        """The replicas fit to read from, checking those whose last check is too old."""
        now = time.monotonic() if now is None else now
        interval: float = settings.DEBUSINE_DATABASE_REPLICA_CHECK_INTERVAL
        stale = [
            alias
            for alias in aliases
            if now - self.health.setdefault(alias, ReplicaHealth()).checked_at >= interval
        ]
        if stale and self.lock.acquire(blocking=False):
            # One thread checks; the others go on with what is known (or the primary).
            try:
                for alias in stale:
                    self.health[alias] = check_replica(alias)
            finally:
                self.lock.release()
        return [alias for alias in aliases if self.health[alias].fit]

    def mark_failed(self, alias: str, reason: str) -> None:
        """A query on `alias` failed: unfit until the next check."""
        self.health[alias] = ReplicaHealth(False, None, time.monotonic(), reason)


_board = HealthBoard()


def replica_lag(url: str) -> float | None:
    """Seconds the replica at `url` is behind its primary, or None if it does not stream."""
    import psycopg

    with psycopg.connect(url, connect_timeout=CHECK_TIMEOUT, autocommit=True) as connection:
        row = connection.execute(LAG_SQL).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def check_replica(alias: str) -> ReplicaHealth:
    """Check one replica now: answering, streaming and within the lag bound."""
    urls: list[str] = settings.DEBUSINE_DATABASE_REPLICA_URLS
    url = urls[int(alias.removeprefix(REPLICA_ALIAS_PREFIX))]
    now = time.monotonic()
    try:
        lag = replica_lag(url)
    except Exception as exc:
        reason = f"does not answer: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}"
        return ReplicaHealth(False, None, now, reason)
    max_lag: float = settings.DEBUSINE_DATABASE_REPLICA_MAX_LAG
    if lag is None:
        return ReplicaHealth(False, None, now, "not streaming from the primary")
    if lag > max_lag:
        return ReplicaHealth(False, lag, now, f"{lag:.1f}s behind (bound {max_lag}s)")
    return ReplicaHealth(True, lag, now, "fit")


def replica_status() -> dict[str, ReplicaHealth]:
    """Every configured replica's health, checked now (for `debusine-admin` and tests)."""
    return {alias: check_replica(alias) for alias in configured_aliases()}


# --- Read-your-writes pins --------------------------------------------------------------------


def _redis() -> redis.Redis:
    return shared_client(REDIS_TIMEOUT)


def caller_identities(request: HttpRequest, response: HttpResponse | None = None) -> list[str]:
    """
    Who is calling, as far as pins go: the token, the session (including one the response
    just opened, as a login does), else the client address.
    """
    identities: list[str] = []
    token = (request.META.get("HTTP_TOKEN") or "").strip()
    if token:
        identities.append("token:" + hashlib.sha256(token.encode()).hexdigest())
    cookie_name: str = settings.SESSION_COOKIE_NAME
    session = request.COOKIES.get(cookie_name)
    if session:
        identities.append("session:" + hashlib.sha256(session.encode()).hexdigest())
    if response is not None and cookie_name in response.cookies:
        opened = response.cookies[cookie_name].value
        if opened:
            identities.append("session:" + hashlib.sha256(opened.encode()).hexdigest())
    if not identities:
        identities.append("address:" + str(request.META.get("REMOTE_ADDR") or "unknown"))
    return identities


def pin_key(identity: str) -> str:
    return f"{settings.DEBUSINE_REDIS_KEY_PREFIX}:replica-pin:{identity}"


def pin(identities: list[str]) -> None:
    """Send these callers' reads to the primary for DEBUSINE_DATABASE_REPLICA_PIN_SECONDS."""
    seconds: int = settings.DEBUSINE_DATABASE_REPLICA_PIN_SECONDS
    try:
        with _redis().pipeline(transaction=False) as pipeline:
            for identity in identities:
                pipeline.set(pin_key(identity), "1", ex=seconds)
            pipeline.execute()
    except redis.RedisError as exc:
        # Unpinned, the caller may read a replica's older state for up to the lag bound.
        logger.warning("cannot pin %s to the primary: %s", ", ".join(identities), exc)


def is_pinned(identities: list[str]) -> bool:
    """Whether any of these callers wrote recently; True when Redis does not answer."""
    try:
        return bool(_redis().exists(*(pin_key(identity) for identity in identities)))
    except redis.RedisError:
        return True


# --- The middleware ---------------------------------------------------------------------------


def is_eligible(request: HttpRequest) -> bool:
    """Whether `request` may read from a replica, before looking at who sends it."""
    return request.method in READ_ONLY_METHODS and not request.path.startswith(WORKER_PATHS)


def choose_replica(request: HttpRequest) -> str | None:
    """The replica `request` reads from, or None for the primary."""
    aliases = configured_aliases()
    if not aliases or not is_eligible(request):
        return None
    fit = _board.fit_replicas(aliases)
    if not fit or is_pinned(caller_identities(request)):
        return None
    alias = random.choice(fit)  # noqa: S311 - load spreading, not security
    try:
        connections[alias].ensure_connection()
    except DatabaseError as exc:
        _board.mark_failed(alias, str(exc))
        logger.warning("replica %s does not answer, reading from the primary: %s", alias, exc)
        return None
    return alias


def _note_replica_failure(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """A request failed: if its replica failed under it, the middleware answers it again."""
    import sys

    route = _route.get()
    exc = sys.exc_info()[1]
    if route is None or route.replica is None:
        return
    if isinstance(exc, OperationalError | InterfaceError):
        route.replica_failed = True
        _board.mark_failed(route.replica, str(exc))


got_request_exception.connect(_note_replica_failure, dispatch_uid="debusine-replica-failure")


class ReplicaMiddleware:
    """Decide where each request reads; pin callers who wrote; retry on a failed replica."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not settings.DEBUSINE_DATABASE_REPLICA_URLS:
            return self.get_response(request)
        route = RequestRoute(replica=choose_replica(request))
        token = _route.set(route)
        try:
            response = self.get_response(request)
            if route.replica_failed:
                logger.warning(
                    "a replica failed during %s; answering from the primary", request.path
                )
                route.replica = None
                route.replica_failed = False
                response = self.get_response(request)
        finally:
            _route.reset(token)
        if route.wrote or request.method not in READ_ONLY_METHODS:
            pin(caller_identities(request, response))
        if route.replica is not None:
            response["X-Debusine-Read-From"] = "replica"
        return response
