"""
The server's gunicorn configuration (`--config python:debusine.server.project.gunicorn_config`).

The arbiter imports the whole application before it forks the workers (`preload_app`), so the
workers share its pages instead of each importing everything again. Two things keep them shared
and keep the fork safe (see docs/explanation/processes-and-memory.md):

- `when_ready` finishes the imports a first request would make (the URL configuration and the
  views it names), then freezes every object the arbiter has made (`gc.freeze()`): the workers'
  garbage collector then never writes to those objects' headers, which would copy their pages.
- Before the first fork, the arbiter must hold no database or Redis connection and run no other
  thread: a forked connection would be shared by several processes, and a forked lock held by
  another thread stays locked for ever. `when_ready` refuses to start the workers otherwise.

The number of workers is DEBUSINE_SERVER_WORKERS (settings.toml or the environment), and
`(2 x CPU cores) + 1` when that is 0, the default. Command-line options (`--workers`,
`--bind`...) override what is set here.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import threading
from pathlib import Path
from typing import Any


def default_workers(configured: int | None = None) -> int:
    """Gunicorn workers: DEBUSINE_SERVER_WORKERS when positive, else (2 x CPU cores) + 1."""
    if configured is None:
        from debusine.server.project.settings_loader import declared_settings

        configured = int(declared_settings()["DEBUSINE_SERVER_WORKERS"])
    if configured > 0:
        return configured
    return 2 * (os.cpu_count() or 1) + 1


preload_app = True
workers = default_workers()
worker_class = "debusine.server.project.uvicorn_worker.DebusineUvicornWorker"
graceful_timeout = 10

#: /proc/net tables of connected sockets: (file, state column value meaning "connected").
_CONNECTED_STATES = {"tcp": "01", "tcp6": "01", "unix": "03"}


class ForkSafetyError(RuntimeError):
    """The arbiter holds something a forked worker must not inherit."""


#: Standard input, output and error: under systemd, output and error are a connected socket to
#: the journal, which the workers inherit on purpose.
_STANDARD_STREAMS = {"0", "1", "2"}

#: Type column of /proc/net/unix for stream sockets (a datagram socket, e.g. to syslog, carries
#: whole messages and may be shared).
_UNIX_STREAM = "0001"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        if fd.name in _STANDARD_STREAMS:
            continue
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def connected_sockets(pid: int | None = None) -> list[str]:
    """
    The connected (not listening) TCP and Unix stream sockets of process `pid` (default: this
    one), as `table:inode` strings: a database or Redis connection is one of them. Standard
    streams are left out.
    """
    pid = os.getpid() if pid is None else pid
    mine = _socket_inodes(pid)
    found = []
    for table, connected in _CONNECTED_STATES.items():
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if table == "unix":
                # Num RefCount Protocol Flags Type St Inode [Path]
                if fields[4] != _UNIX_STREAM:
                    continue
                state, inode = fields[5], fields[6]
            else:
                # sl local remote st tx:rx tr:when retrnsmt uid timeout inode
                state, inode = fields[3], fields[9]
            if state == connected and inode in mine:
                found.append(f"{table}:{inode}")
    return found


def fork_hazards() -> list[str]:
    """What this process holds that a forked child must not inherit (empty: safe to fork)."""
    from django.db import connections

    hazards = [
        f"database connection {alias!r} is open"
        for alias in connections
        if connections[alias].connection is not None
    ]
    hazards.extend(f"thread {thread.name!r} is running" for thread in _other_threads())
    hazards.extend(f"socket {name} is connected" for name in connected_sockets())
    return hazards


def _other_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread is not threading.main_thread()]


#: Modules a worker would otherwise import after the fork, each on its own: uvicorn's event
#: loop, protocols and lifespan, the database pool, and what the middleware imports at the
#: first request (found by comparing a worker's modules with the arbiter's).
WORKER_MODULES = [
    "uvloop",
    "uvicorn.loops.auto",
    "uvicorn.loops.uvloop",
    "uvicorn.lifespan.off",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.protocols.websockets.websockets_sansio_impl",
    "psycopg_pool",
    "django.contrib.messages.storage.fallback",
    "django.contrib.sessions.serializers",
]


def warm_up() -> None:
    """Import what the first request of each worker would otherwise import on its own."""
    from django.urls import get_resolver

    from debusine.tasks.base import load_builtin_tasks

    resolver = get_resolver()
    resolver.url_patterns  # noqa: B018 (imports the URL modules and every view they name)
    resolver.reverse_dict  # noqa: B018 (builds the lookup tables, shared from now on)
    # Any worker may validate any task's data: import every task once here, where the import
    # is shared, rather than in each worker that meets the task (imported after the fork, a
    # module is private to each worker). The S3 backend stays unimported unless a store uses it.
    load_builtin_tasks()
    for name in WORKER_MODULES:
        # Optional speed-ups of uvicorn (uvloop, httptools) may be missing: then it uses
        # something else, imported after the fork.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def on_starting(server: Any) -> None:
    """In the arbiter, before it listens: refuse a configuration it cannot serve."""
    from django.conf import settings

    from debusine.server.project.multi_server import check_can_start

    # A RuntimeError: gunicorn prints "Error: <message>" and exits with status 1.
    check_can_start(settings.DEBUSINE_MULTI_SERVER, settings.DEBUSINE_DATABASE_URL)


def when_ready(server: Any) -> None:
    """In the arbiter, once the application is loaded and before the first worker forks."""
    warm_up()
    hazards = fork_hazards()
    if hazards:
        raise ForkSafetyError("the server cannot fork its workers safely: " + "; ".join(hazards))
    gc.collect()
    gc.freeze()
    server.log.info("Application preloaded and frozen (%d objects)", gc.get_freeze_count())


def pre_fork(server: Any, worker: Any) -> None:
    """Before each fork (a worker replaced later too): freeze what the arbiter made since."""
    gc.freeze()
