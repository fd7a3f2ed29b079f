"""
The development stack behind `make run`: one command that runs the whole system.

`python -m debusine.testing.devstack --port 8000` (with DEBUSINE_DATA_DIR naming the data
directory) chooses PostgreSQL and Redis (see `debusine.testing.embedded`), records them
in the data directory so that `debusine-admin` reaches the same instance, migrates the
database, makes sure an admin user with a token and a ready client configuration exist, then
runs in the foreground the server, the scheduler (a Celery worker that also runs the server
tasks and beat), one local worker daemon (registered and enabled through an activation
token, configured under `<data dir>/worker/`) and one signing worker (`debusine-signing
signing_worker`, configured under `<data dir>/signing/`, with a signing database of its own on
the same PostgreSQL server, `<database>_signing`, and a service key of its own). A process
that fails is restarted with a back-off, as systemd's `Restart=on-failure` would (see
`RestartPolicy`); one that keeps failing stops the stack. SIGINT or SIGTERM stops every process
it started, by PID, newest first, then the embedded services. Every process it starts, and
every process those start, dies with it even when it is killed outright (a parent-death signal
in each).

Server-side processes are listed in `stack_processes()`; the worker starts once the server
answers.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import http.client
import importlib.metadata
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal, NoReturn

from debusine.server.project import instance
from debusine.testing.embedded import EmbeddedServiceError, Services, provide_services
from debusine.testing.processes import (
    describe_port_holders,
    port_is_taken,
    stop_process,
    terminate_with_parent,
)

ADMIN_USERNAME = "admin"
CLIENT_CONFIG_SERVER = "local"
TOKEN_COMMENT = "make run client configuration"  # noqa: S105 (a label, not a secret)
READY_LINE_PREFIX = "Debusine is running at "
STARTUP_TIMEOUT = 60.0


class StopRequested(BaseException):
    """SIGINT or SIGTERM arrived: unwind and stop everything (BaseException, like Ctrl-C)."""


@dataclass(frozen=True)
class ProcessSpec:
    """A long-running process of the stack: a name for messages and its command line."""

    name: str
    argv: list[str]
    #: Exit codes that mean "an administrator must look" (bad configuration): no restart,
    #: like systemd's RestartPreventExitStatus=.
    no_restart_codes: tuple[int, ...] = ()


@dataclass(frozen=True)
class RestartPolicy:
    """
    How the dev stack restarts a process that failed, like systemd's `Restart=on-failure`.

    The first restart waits `initial_delay`, each further one twice as long, up to
    `max_delay`. A process that ran `stable_after` seconds counts as healthy again: its
    next failure waits `initial_delay`. After `max_rapid_failures` failures in a row, each
    within `stable_after` of its start, the supervisor gives up.
    """

    initial_delay: float = 0.1
    max_delay: float = 10.0
    stable_after: float = 30.0
    max_rapid_failures: int = 5


class GaveUpError(Exception):
    """A process kept failing: the message says which and how; the stack must stop."""


def describe_exit(code: int) -> str:
    """`exited with code 1` or `was killed by SIGKILL`, from a Popen return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Restarts:
    """What the supervisor remembers about one process to restart it."""

    env: Mapping[str, str] | None
    output: Path | None
    started_at: float
    rapid_failures: int = 0
    delay: float = 0.0
    #: When the pending restart is due (monotonic), None when the process runs.
    due_at: float | None = None


def server_worker_count(configured: int) -> int:
    """Gunicorn workers: the configured number, else (2 x CPU cores) + 1."""
    if configured > 0:
        return configured
    return 2 * (os.cpu_count() or 1) + 1


def gunicorn_major_version() -> int:
    """Major version of the installed gunicorn."""
    return int(importlib.metadata.version("gunicorn").split(".")[0])


#: The server's gunicorn configuration: preloading, and the checks and hooks around the fork.
GUNICORN_CONFIG = "debusine.server.project.gunicorn_config"


def gunicorn_argv(bind: str, workers: int) -> list[str]:
    """Command line of the HTTP/websocket server: gunicorn with uvicorn workers."""
    argv = [
        sys.executable, "-m", "gunicorn",
        "--config", f"python:{GUNICORN_CONFIG}",
        "--worker-class", "debusine.server.project.uvicorn_worker.DebusineUvicornWorker",
        "--bind", bind,
        "--workers", str(workers),
        "--graceful-timeout", "10",
        "--preload",
        "--access-logfile", "-",
    ]  # fmt: skip
    if gunicorn_major_version() >= 27:
        # Gunicorn 27's control socket defaults to one path per user (~/.gunicorn): two
        # stacks (or a stack and the integration tests) would take it from each other.
        argv.append("--no-control-socket")
    return [*argv, "debusine.server.project.asgi:application"]


CELERY_APP = "debusine.server.project.celery"


def scheduler_argv() -> list[str]:
    """
    The scheduler, which also runs the server tasks, workflow orchestration, the worker pools'
    provisioner and beat: one Celery worker on the `scheduler`, `celery`, `workflows` and
    `provisioner` queues, one job at a time, with beat as a thread (one interpreter for every
    role; see docs/explanation/processes-and-memory.md). Deployments run the provisioner in a
    unit of its own (its cloud calls must not hold up scheduling passes).
    """
    return [
        sys.executable, "-m", "celery", "--app", CELERY_APP, "worker",
        "--queues", "scheduler,celery,workflows,provisioner",
        "--pool", "solo", "--concurrency", "1",
        "--beat-thread",
        "--hostname", f"scheduler-{uuid.uuid4().hex[:8]}@%h", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def celery_worker_argv() -> list[str]:
    """
    A Celery worker for server-side tasks and workflows (queues `celery`, `workflows`): not part
    of the default stack, whose scheduler serves those queues; for deployments that split the
    roles, and tests that want orchestration beside the scheduler.
    """
    return [
        sys.executable, "-m", "celery", "--app", CELERY_APP, "worker",
        "--queues", "celery,workflows", "--concurrency", "1",
        "--hostname", f"celery-{uuid.uuid4().hex[:8]}@%h", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def beat_argv() -> list[str]:
    """
    Celery beat alone: the periodic jobs (fallback scheduling pass, lease expiry). Not part of
    the default stack, whose scheduler runs beat as a thread; for deployments that split roles.
    """
    return [
        sys.executable, "-m", "celery", "--app", f"{CELERY_APP}:beat_app", "beat",
        "--loglevel", "INFO",
    ]  # fmt: skip


def scheduling_processes() -> list[ProcessSpec]:
    """The processes that turn pending work requests into running ones (and run server tasks)."""
    return [ProcessSpec("scheduler", scheduler_argv())]


def stack_processes(port: int, workers: int) -> list[ProcessSpec]:
    """Every long-running server-side process of the development stack, in start order."""
    return [
        ProcessSpec("server", gunicorn_argv(f"127.0.0.1:{port}", workers)),
        *scheduling_processes(),
    ]


class Supervisor:
    """Starts processes, restarts those that fail (in `supervise`), and stops them by PID."""

    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.running: list[tuple[ProcessSpec, subprocess.Popen[bytes]]] = []
        self.policy = policy or RestartPolicy()
        self._restarts: dict[str, _Restarts] = {}
        #: (name, old PID, exit code, delay) of each restart scheduled, for tests and logs.
        self.restart_log: list[tuple[str, int, int, float]] = []

    def start(
        self,
        spec: ProcessSpec,
        *,
        env: Mapping[str, str] | None = None,
        output: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """
        Start `spec` in its own session, so a terminal Ctrl-C reaches only the stack.

        Its output goes to ours, or is appended to the file `output`.
        """
        process = self._spawn(spec, env, output)
        self.running.append((spec, process))
        self._restarts[spec.name] = _Restarts(env=env, output=output, started_at=time.monotonic())
        return process

    @staticmethod
    def _spawn(
        spec: ProcessSpec, env: Mapping[str, str] | None, output: Path | None
    ) -> subprocess.Popen[bytes]:
        with contextlib.ExitStack() as files:
            stdout = files.enter_context(output.open("ab")) if output is not None else None
            return subprocess.Popen(
                spec.argv,
                env=env,
                stdout=stdout,
                stderr=subprocess.STDOUT if stdout is not None else None,
                start_new_session=True,
                preexec_fn=terminate_with_parent,
            )

    def supervise(self, poll_interval: float = 0.1) -> NoReturn:
        """
        Run until a process gives up: restart each one that fails, with a back-off.

        Raise GaveUpError when a process exits with one of its `no_restart_codes`, exits cleanly
        (code 0: a long-running process is not meant to end), or fails too often in a row.
        """
        while True:
            self.check_once()
            time.sleep(poll_interval)

    def check_once(self) -> None:
        """Notice exits, schedule their restarts, and run the restarts that are due."""
        now = time.monotonic()
        for index, (spec, process) in enumerate(self.running):
            state = self._restarts[spec.name]
            if state.due_at is None:
                code = process.poll()
                if code is not None:
                    self._schedule_restart(spec, process, code, state, now)
            if state.due_at is not None and now >= state.due_at:
                replacement = self._spawn(spec, state.env, state.output)
                self.running[index] = (spec, replacement)
                state.started_at = time.monotonic()
                state.due_at = None
                print(f"Restarted the {spec.name} process (PID {replacement.pid}).", flush=True)

    def _schedule_restart(
        self,
        spec: ProcessSpec,
        process: subprocess.Popen[bytes],
        code: int,
        state: _Restarts,
        now: float,
    ) -> None:
        what = f"The {spec.name} process (PID {process.pid}) {describe_exit(code)}"
        if code == 0 or code in spec.no_restart_codes:
            raise GaveUpError(f"{what}; not restarting it")
        policy = self.policy
        if now - state.started_at >= policy.stable_after:
            state.rapid_failures = 0
            state.delay = 0.0
        state.rapid_failures += 1
        if state.rapid_failures > policy.max_rapid_failures:
            raise GaveUpError(
                f"{what}, its {policy.max_rapid_failures + 1}th failure in a row within"
                f" {policy.stable_after:g}s of starting; giving up"
            )
        state.delay = min(
            policy.max_delay, state.delay * 2 if state.delay else policy.initial_delay
        )
        state.due_at = now + state.delay
        self.restart_log.append((spec.name, process.pid, code, state.delay))
        print(f"{what}; restarting it in {state.delay:g}s.", flush=True)

    def first_exited(self) -> tuple[ProcessSpec, int] | None:
        """The first process that has exited, with its exit code, if any."""
        for spec, process in self.running:
            code = process.poll()
            if code is not None:
                return spec, code
        return None

    def wait_for_any_exit(self, poll_interval: float = 0.5) -> tuple[ProcessSpec, int]:
        """Block until one of the processes exits."""
        while True:
            exited = self.first_exited()
            if exited is not None:
                return exited
            time.sleep(poll_interval)

    def stop_all(self, timeout: float = 20) -> None:
        """Stop every process, newest first: SIGTERM, then SIGKILL after `timeout`."""
        while self.running:
            spec, process = self.running.pop()
            self._restarts.pop(spec.name, None)
            stop_process(process, timeout)


def _request_stop(signum: int, _frame: FrameType | None) -> NoReturn:
    raise StopRequested(signal.Signals(signum).name)


def client_config_text(port: int, scope: str, token_key: str) -> str:
    """The `debusine` client configuration for this stack (config.ini format)."""
    return (
        "[General]\n"
        f"default-server = {CLIENT_CONFIG_SERVER}\n"
        "\n"
        f"[server:{CLIENT_CONFIG_SERVER}]\n"
        f"api-url = http://localhost:{port}/api\n"
        f"scope = {scope}\n"
        f"token = {token_key}\n"
    )


def recorded_token_key(config_path: Path) -> str | None:
    """The token of the client configuration written by a previous run, if any."""
    parser = configparser.ConfigParser()
    try:
        parser.read(config_path)
    except configparser.Error:
        return None
    return parser.get(f"server:{CLIENT_CONFIG_SERVER}", "token", fallback=None) or None


def ensure_admin_token(previous_key: str | None) -> str:
    """
    Make sure the `admin` superuser exists and return the key of a usable token of theirs.

    The previous run's key is reused while its token still exists, is enabled and has not
    expired, so a client configured once keeps working across restarts.
    """
    from django.db import transaction

    from debusine.server.db.models import Token, User, hash_token_key

    with transaction.atomic():
        admin, created = User.objects.get_or_create(
            username=ADMIN_USERNAME,
            defaults={"is_superuser": True, "is_staff": True, "email": "admin@localhost"},
        )
        if created:
            # Log in to the web UI after `debusine-admin changepassword admin`.
            admin.set_unusable_password()
            admin.save(update_fields=["password"])
        elif not (admin.is_superuser and admin.is_staff):
            admin.is_superuser = admin.is_staff = True
            admin.save(update_fields=["is_superuser", "is_staff"])
        if (
            previous_key
            and Token.objects.usable()
            .filter(hash=hash_token_key(previous_key), user=admin)
            .exists()
        ):
            return previous_key
        _token, key = Token.objects.create_with_key(
            user=admin, enabled=True, comment=TOKEN_COMMENT
        )
        return key


#: The development stack's own worker: its name, and its directory under the data directory.
LOCAL_WORKER_FQDN = "local-worker"
LOCAL_WORKER_DIRECTORY = "worker"
#: The development stack's signing worker: its name, and its directory (configuration,
#: service key) under the data directory.
SIGNING_WORKER_FQDN = "local-signing-worker"
SIGNING_DIRECTORY = "signing"


def worker_argv(config_dir: Path) -> list[str]:
    """The local worker daemon, configured by `config_dir`."""
    return [sys.executable, "-m", "debusine.worker", "--config-dir", str(config_dir)]


def signing_worker_argv(config_dir: Path) -> list[str]:
    """The signing worker daemon, configured by `config_dir`."""
    return [
        sys.executable, "-m", "debusine.signing.main", "signing_worker",
        "--config-dir", str(config_dir),
    ]  # fmt: skip


def signing_database_url(database_url: str) -> str:
    """The stack's signing database: the server's name + `_signing`, on the same server."""
    name = instance.parse_database_url(database_url).name
    return instance.with_database_name(database_url, f"{name}_signing")


def prepare_signing(data_dir: Path, database_url: str) -> dict[str, str]:
    """
    Give the stack's signing worker its database (created and migrated) and a service key;
    return the environment of its processes. Nothing of it is in the server's database.
    """
    from debusine.signing.service_keys import generate_service_key
    from debusine.testing.embedded import ensure_database_exists

    directory = data_dir / SIGNING_DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    service_key = directory / "0.key"
    if not service_key.exists():
        generate_service_key(service_key)
    url = signing_database_url(database_url)
    environment = {
        **os.environ,
        "DEBUSINE_SIGNING_DATABASE_URL": url,
        "DEBUSINE_SIGNING_SERVICE_KEYS": str(service_key),
        "DEBUSINE_SIGNING_LOCK_DIRECTORY": str(directory / "locks"),
        # Settings come from this environment only, not from /etc/debusine/signing/.
        "DEBUSINE_SIGNING_SETTINGS_FILE": str(directory / "settings.toml"),
    }
    ensure_database_exists(url)
    print("Applying signing database migrations...", flush=True)
    migrate = [sys.executable, "-m", "debusine.signing.main", "migrate", "--no-input", "-v", "0"]
    result = subprocess.run(migrate, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EmbeddedServiceError(f"debusine-signing migrate failed: {result.stderr.strip()}")
    return environment


def prepare_local_worker(
    config_dir: Path,
    port: int,
    *,
    fqdn: str = LOCAL_WORKER_FQDN,
    worker_type: Literal["external", "signing"] = "external",
) -> None:
    """
    Configure a worker of the stack: registered and enabled without anyone running a command.

    The first time (or when the database no longer knows the worker's token, e.g. a new
    embedded database), a worker is pre-created with an activation token, which the daemon
    exchanges for its own enabled token when it registers.
    """
    from django.db import transaction

    from debusine.server.db.models import Token, Worker, hash_token_key

    config_dir.mkdir(parents=True, exist_ok=True)
    config_dir.chmod(0o700)
    (config_dir / "config.ini").write_text(
        f"[General]\napi-url = http://127.0.0.1:{port}/api\n", encoding="utf-8"
    )
    token_file = config_dir / "token"
    activation_file = config_dir / "activation-token"
    if token_file.exists():
        key = token_file.read_text(encoding="utf-8").strip()
        if Worker.objects.filter(token__hash=hash_token_key(key)).exists():
            return
        token_file.unlink()
    if activation_file.exists():
        key = activation_file.read_text(encoding="utf-8").strip()
        usable = Token.objects.usable().filter(hash=hash_token_key(key))
        if Worker.objects.filter(activation_token__in=usable).exists():
            return
    with transaction.atomic():
        _worker, key = Worker.objects.create_with_activation_token(fqdn, worker_type)
    activation_file.write_text(key + "\n", encoding="utf-8")
    activation_file.chmod(0o600)


def prepare_instance(data_dir: Path, port: int) -> str:
    """Migrate the database and ensure the admin token; return the client configuration."""
    import importlib

    import django
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    import debusine.server.project.settings as settings_module

    # The settings module was imported (to read the declared settings) before the services
    # were chosen; evaluate it again so that it sees the URLs now in the environment.
    importlib.reload(settings_module)
    django.setup()
    print("Applying database migrations...", flush=True)
    call_command("migrate", interactive=False, verbosity=0)
    config_path = data_dir / instance.CLIENT_CONFIG_FILE
    key = ensure_admin_token(recorded_token_key(config_path))
    config = client_config_text(port, settings.DEBUSINE_DEFAULT_SCOPE, key)
    instance.write_recorded(data_dir, instance.CLIENT_CONFIG_FILE, config, private=True)
    prepare_local_worker(data_dir / LOCAL_WORKER_DIRECTORY, port)
    prepare_local_worker(
        data_dir / SIGNING_DIRECTORY, port, fqdn=SIGNING_WORKER_FQDN, worker_type="signing"
    )
    # The server processes open their own connections; keep none across their start.
    connections.close_all()
    return config


def wait_until_answering(url: str, supervisor: Supervisor, timeout: float) -> None:
    """Wait until `url` gives any HTTP answer; fail if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        exited = supervisor.first_exited()
        if exited is not None:
            spec, code = exited
            raise EmbeddedServiceError(f"the {spec.name} process exited with code {code}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our own http URL)
                return
        except urllib.error.HTTPError:
            return  # Any HTTP status means the server is up.
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            # Not up yet, or something else (not HTTP) holds the port: keep waiting.
            if time.monotonic() > deadline:
                raise EmbeddedServiceError(
                    f"the server did not answer on {url} within {timeout:.0f}s"
                ) from None
            time.sleep(0.2)


class DevStack:
    """One run of the development stack for one data directory."""

    def __init__(self, data_dir: Path, port: int, configured: dict[str, object]) -> None:
        self.data_dir = data_dir
        self.port = port
        self.configured = configured
        self.supervisor = Supervisor()
        self.services: Services | None = None

    def run(self) -> int:
        """Run until a signal (exit 0) or a failure (exit 1); always clean up."""
        signal.signal(signal.SIGINT, _request_stop)
        signal.signal(signal.SIGTERM, _request_stop)
        try:
            self._start()
            self.supervisor.supervise()
        except GaveUpError as gave_up:
            print(f"{gave_up}; stopping the stack.", flush=True)
            return 1
        except StopRequested as stop:
            print(f"\nReceived {stop}; stopping.", flush=True)
            return 0
        except EmbeddedServiceError as exc:
            print(f"make run: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self._stop()

    def _start(self) -> None:
        if port_is_taken(self.port):
            # Whatever answers there (an earlier stack's orphaned server, another program)
            # would be taken for our server once it "answers", and ours could not bind.
            raise EmbeddedServiceError(
                f"{describe_port_holders(self.port)} is already in use;"
                " stop what holds it or choose another port (make run PORT=...)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        print(f"Data directory: {self.data_dir}", flush=True)
        self.services = provide_services(
            self.data_dir,
            database_name=instance.database_name_for(self.data_dir),
            mode=str(self.configured["DEBUSINE_EMBEDDED_SERVICES"]),
            configured_database_url=str(self.configured["DEBUSINE_DATABASE_URL"]),
            configured_redis_url=str(self.configured["DEBUSINE_REDIS_URL"]),
        )
        for description in self.services.descriptions:
            print(description, flush=True)
        instance.write_recorded(
            self.data_dir, instance.DATABASE_URL_FILE, self.services.database_url, private=True
        )
        instance.write_recorded(
            self.data_dir, instance.REDIS_URL_FILE, self.services.redis_url, private=True
        )
        instance.ensure_secret_key(self.data_dir)
        instance.write_recorded(self.data_dir, instance.DEVSTACK_PID_FILE, str(os.getpid()))
        # Explicit for this process and every child: a URL configured in the environment
        # must not win over the embedded services chosen with DEBUSINE_EMBEDDED_SERVICES=always.
        os.environ["DEBUSINE_DATA_DIR"] = str(self.data_dir)
        os.environ["DEBUSINE_DATABASE_URL"] = self.services.database_url
        os.environ["DEBUSINE_REDIS_URL"] = self.services.redis_url
        os.environ["DJANGO_SETTINGS_MODULE"] = "debusine.server.project.settings"

        client_config = prepare_instance(self.data_dir, self.port)
        signing_environment = prepare_signing(self.data_dir, self.services.database_url)
        workers = server_worker_count(int(str(self.configured["DEBUSINE_SERVER_WORKERS"])))
        for spec in stack_processes(self.port, workers):
            self.supervisor.start(spec)
        wait_until_answering(
            f"http://127.0.0.1:{self.port}/api/1.0/whoami/", self.supervisor, STARTUP_TIMEOUT
        )
        self.supervisor.start(
            ProcessSpec(
                "worker",
                worker_argv(self.data_dir / LOCAL_WORKER_DIRECTORY),
                # Bad arguments or configuration, registration refused: restarting won't help.
                no_restart_codes=(2, 3),
            )
        )
        self.supervisor.start(
            ProcessSpec(
                "signing worker",
                signing_worker_argv(self.data_dir / SIGNING_DIRECTORY),
                no_restart_codes=(2, 3),
            ),
            env=signing_environment,
        )
        config_path = self.data_dir / instance.CLIENT_CONFIG_FILE
        print(
            f"\n{READY_LINE_PREFIX}http://localhost:{self.port}/"
            f" (API: http://localhost:{self.port}/api)\n"
            f"Client configuration ({config_path}; copy it to"
            " ~/.config/debusine/client/config.ini):\n\n"
            f"{client_config}\nPress Ctrl-C to stop.",
            flush=True,
        )

    def _stop(self) -> None:
        # A second Ctrl-C must not interrupt the shutdown half-way and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.supervisor.stop_all()
        if self.services is not None:
            self.services.stop()
        pid_file = self.data_dir / instance.DEVSTACK_PID_FILE
        if instance.read_recorded(self.data_dir, instance.DEVSTACK_PID_FILE) == str(os.getpid()):
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
        print("Stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the stack."""
    parser = argparse.ArgumentParser(
        prog="python -m debusine.testing.devstack", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory (default: DEBUSINE_DATA_DIR, else .data/ of the checkout)",
    )
    args = parser.parse_args(argv)

    from debusine.server.project.settings_loader import SettingsError, declared_settings

    try:
        configured = declared_settings()
    except SettingsError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    data_dir_setting = (
        args.data_dir if args.data_dir is not None else configured["DEBUSINE_DATA_DIR"]
    )
    data_dir = instance.resolve_data_dir(Path(data_dir_setting))
    return DevStack(data_dir, args.port, configured).run()


if __name__ == "__main__":
    sys.exit(main())
