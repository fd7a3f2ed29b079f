"""
Token brute force protection: refused tokens counted per client address, in Redis.

Every request refused for its token (unknown, expired, disabled...) counts against the
address it came from; once an address has DEBUSINE_TOKEN_FAILURE_LIMIT refusals within
DEBUSINE_TOKEN_FAILURE_WINDOW seconds, its further refused tokens get 429 with Retry-After
(the seconds left in the window) instead of the reason. Requests with a valid token never
reach this module: they cost no Redis call and are never slowed, whatever their address did.

The address is the request's REMOTE_ADDR: behind nginx, the last X-Forwarded-For entry when
the proxy is one of DEBUSINE_TRUSTED_PROXIES (debusine.server.project.forwarded). The counter
is a Redis key per address that expires with its window (a fixed window). When Redis does not
answer, nothing is counted and the refusal is reported as usual: losing Redis must not lock
anyone out.

The websockets count the same way: a token presented on the upgrade request and refused counts
against the connection's address, and past the limit the rejection frame says to retry later
instead of giving the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest

from debusine.server.redis_clients import shared_client

logger = logging.getLogger(__name__)

#: Seconds to wait for Redis before giving up on counting a failure.
REDIS_TIMEOUT = 0.5


def redis_client() -> redis.Redis:
    return shared_client(REDIS_TIMEOUT)


def client_address(request: HttpRequest) -> str:
    """The address refused tokens are counted against."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def scope_address(scope: Mapping[str, Any]) -> str:
    """The address of a websocket's ASGI scope (uvicorn has applied trusted proxies' headers)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def too_many_reason(retry_after: int) -> str:
    """What a refused client over the limit is told, on the API and the websockets alike."""
    return f"This address presented too many invalid tokens: retry in {retry_after} seconds."


def counter_key(address: str) -> str:
    return f"{settings.DEBUSINE_REDIS_KEY_PREFIX}:token-failures:{address}"


def record_failure(request: HttpRequest) -> int | None:
    """
    Count one refused token from `request`'s address; return the seconds the address must
    wait (its window's remaining time) when it is over the limit, else None.
    """
    return record_failure_from(client_address(request))


def record_failure_from(address: str) -> int | None:
    """`record_failure` for a refusal from `address` (a websocket's, for instance)."""
    limit: int = settings.DEBUSINE_TOKEN_FAILURE_LIMIT
    window: int = settings.DEBUSINE_TOKEN_FAILURE_WINDOW
    if limit <= 0 or window <= 0:
        return None
    key = counter_key(address)
    try:
        pipeline = redis_client().pipeline()
        pipeline.incr(key)
        pipeline.expire(key, window, nx=True)
        pipeline.ttl(key)
        count, _set, ttl = pipeline.execute()
    except redis.RedisError as error:
        logger.warning("Cannot count a refused token in Redis: %s", error)
        return None
    if int(count) <= limit:
        return None
    return max(int(ttl), 1)


async def websocket_refusal(scope: Mapping[str, Any], reason: str) -> str:
    """
    Count the refusal of the token a websocket presented; the reason its rejection frame gives:
    `reason`, or past the limit the delay to wait (the reason is then not disclosed).
    """
    retry_after = await sync_to_async(record_failure_from)(scope_address(scope))
    return reason if retry_after is None else too_many_reason(retry_after)


def reset(address: str) -> None:
    """Forget the refusals counted for `address` (for administrators and tests)."""
    redis_client().delete(counter_key(address))
