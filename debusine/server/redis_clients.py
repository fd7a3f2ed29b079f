"""
The process's Redis clients, shared by every module that talks to Redis.

A client holds a connection pool; one per (URL, timeout) per process is enough, whatever the
number of threads (redis-py's pool is thread-safe, and it starts afresh in a forked child).
Modules differ only in how long they may wait: the metrics and the token-failure counters give
up quickly, the scheduler's triggers and the live logs wait longer. Keying on the URL read from
the settings at each call means a changed `DEBUSINE_REDIS_URL` (tests do it) is followed.
"""

from __future__ import annotations

import threading

import redis
from django.conf import settings

_clients: dict[tuple[str, float], redis.Redis] = {}
_lock = threading.Lock()


def shared_client(timeout: float) -> redis.Redis:
    """The process's client for the configured Redis, giving up after `timeout` seconds."""
    key = (str(settings.DEBUSINE_REDIS_URL), timeout)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis.from_url(
                    key[0], socket_timeout=timeout, socket_connect_timeout=timeout
                )
                _clients[key] = client
    return client
