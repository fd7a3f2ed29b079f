"""Tests of the development stack's pieces: processes, client configuration, admin token."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from debusine.server.db.models import Token, User
from debusine.testing import devstack
from debusine.testing.devstack import ProcessSpec, Supervisor
from debusine.testing.embedded import EmbeddedServiceError
from debusine.testing.processes import free_port, process_is_alive, wait_for_exit


def test_worker_count_defaults_to_twice_the_cores_plus_one() -> None:
    assert devstack.server_worker_count(0) == 2 * (os.cpu_count() or 1) + 1
    assert devstack.server_worker_count(3) == 3


def test_server_is_gunicorn_with_uvicorn_workers() -> None:
    argv = devstack.gunicorn_argv("127.0.0.1:8123", 4)
    assert argv[:3] == [sys.executable, "-m", "gunicorn"]
    assert argv[argv.index("--worker-class") + 1] == (
        "debusine.server.project.uvicorn_worker.DebusineUvicornWorker"
    )
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:8123"
    assert argv[argv.index("--workers") + 1] == "4"
    assert argv[-1] == "debusine.server.project.asgi:application"
    if devstack.gunicorn_major_version() >= 27:
        assert "--no-control-socket" in argv


def test_stack_starts_the_server_and_one_scheduler_for_the_other_roles() -> None:
    server, scheduler = devstack.stack_processes(8123, 2)
    assert server.name == "server"
    assert "127.0.0.1:8123" in server.argv
    assert server.argv[server.argv.index("--config") + 1] == (
        "python:debusine.server.project.gunicorn_config"
    )
    assert scheduler.name == "scheduler"
    # One job at a time (scheduling passes, server tasks, orchestrators), beat as a thread.
    assert (
        scheduler.argv[scheduler.argv.index("--queues") + 1]
        == "scheduler,celery,workflows,provisioner"
    )
    assert scheduler.argv[scheduler.argv.index("--pool") + 1] == "solo"
    assert scheduler.argv[scheduler.argv.index("--concurrency") + 1] == "1"
    assert "--beat-thread" in scheduler.argv


def test_split_roles_are_still_available() -> None:
    beat = devstack.beat_argv()
    assert beat[beat.index("--app") + 1].endswith(":beat_app") and beat[-3] == "beat"
    celery = devstack.celery_worker_argv()
    # Server tasks and workflow orchestrators.
    assert celery[celery.index("--queues") + 1] == "celery,workflows"


def test_client_config_round_trips_the_token(tmp_path: Path) -> None:
    text = devstack.client_config_text(8123, "debusine", "k" * 64)
    assert text == (
        "[General]\ndefault-server = local\n\n[server:local]\n"
        "api-url = http://localhost:8123/api\nscope = debusine\ntoken = " + "k" * 64 + "\n"
    )
    config = tmp_path / "client-config.ini"
    config.write_text(text)
    assert devstack.recorded_token_key(config) == "k" * 64


def test_recorded_token_of_a_missing_or_broken_config_is_none(tmp_path: Path) -> None:
    assert devstack.recorded_token_key(tmp_path / "missing.ini") is None
    broken = tmp_path / "broken.ini"
    broken.write_text("token = no section header\n")
    assert devstack.recorded_token_key(broken) is None


@pytest.mark.django_db
def test_admin_token_is_created_then_reused() -> None:
    key = devstack.ensure_admin_token(None)
    admin = User.objects.get(username=devstack.ADMIN_USERNAME)
    assert admin.is_superuser and admin.is_staff
    assert not admin.has_usable_password()
    token = Token.objects.get_by_key(key)
    assert token is not None and token.enabled and token.user == admin

    assert devstack.ensure_admin_token(key) == key
    assert Token.objects.filter(user=admin).count() == 1


@pytest.mark.django_db
def test_admin_token_is_replaced_when_no_longer_usable() -> None:
    key = devstack.ensure_admin_token(None)
    Token.objects.filter(user__username=devstack.ADMIN_USERNAME).update(enabled=False)
    replacement = devstack.ensure_admin_token(key)
    assert replacement != key
    assert devstack.ensure_admin_token("not-a-token-anybody-has") not in (key, "")


@pytest.mark.django_db
def test_existing_admin_user_becomes_superuser() -> None:
    User.objects.create_user(username=devstack.ADMIN_USERNAME, email="a@example.org")
    devstack.ensure_admin_token(None)
    admin = User.objects.get(username=devstack.ADMIN_USERNAME)
    assert admin.is_superuser and admin.is_staff


def sleeper(name: str, seconds: str = "60") -> ProcessSpec:
    return ProcessSpec(name, [sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_supervisor_stops_every_process_by_pid(tmp_path: Path) -> None:
    supervisor = Supervisor()
    first = supervisor.start(sleeper("first"))
    second = supervisor.start(sleeper("second"), output=tmp_path / "log")
    assert supervisor.first_exited() is None
    supervisor.stop_all(timeout=5)
    assert supervisor.running == []
    assert first.returncode is not None and second.returncode is not None
    assert not process_is_alive(first.pid) and not process_is_alive(second.pid)


def test_supervisor_reports_the_process_that_exited() -> None:
    supervisor = Supervisor()
    supervisor.start(sleeper("long"))
    supervisor.start(ProcessSpec("short", [sys.executable, "-c", "raise SystemExit(7)"]))
    try:
        spec, code = supervisor.wait_for_any_exit(poll_interval=0.05)
        assert (spec.name, code) == ("short", 7)
    finally:
        supervisor.stop_all(timeout=5)


def test_waiting_for_the_server_fails_when_it_dies() -> None:
    supervisor = Supervisor()
    supervisor.start(ProcessSpec("server", [sys.executable, "-c", "raise SystemExit(3)"]))
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(EmbeddedServiceError, match="the server process exited with code 3"):
        devstack.wait_until_answering(url, supervisor, timeout=30)
    supervisor.stop_all()


def test_waiting_for_the_server_times_out() -> None:
    supervisor = Supervisor()
    supervisor.start(sleeper("server"))
    try:
        with pytest.raises(EmbeddedServiceError, match="did not answer"):
            devstack.wait_until_answering(
                f"http://127.0.0.1:{free_port()}/", supervisor, timeout=0.5
            )
    finally:
        supervisor.stop_all(timeout=5)


def test_bad_settings_stop_the_stack_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEBUSINE_SERVER_WORKERS", "many")
    assert devstack.main(["--port", "1"]) == 2
    assert "DEBUSINE_SERVER_WORKERS" in capsys.readouterr().err


def test_children_are_terminated_when_the_stack_is_killed() -> None:
    # SIGKILL gives the stack no chance to clean up; the kernel must stop its children.
    script = (
        "import sys, time\n"
        "from debusine.testing.devstack import ProcessSpec, Supervisor\n"
        "child = Supervisor().start(\n"
        "    ProcessSpec('child', [sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        ")\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    stack = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert stack.stdout is not None
    child_pid = int(stack.stdout.readline())
    assert process_is_alive(child_pid)
    stack.kill()
    stack.wait()
    assert wait_for_exit(child_pid, 10)


def test_beat_sends_the_periodic_jobs_by_name() -> None:
    from debusine.server.project import celery

    schedule = celery.beat_app.conf.beat_schedule
    assert {entry["task"] for entry in schedule.values()} == {
        "debusine.scheduler.schedule",
        "debusine.scheduler.expire_leases",
        "debusine.metrics.fold_counts",
        "debusine.workflows.sweep",
        "debusine.provisioner.provision",
    }
    # Every name beat sends is a job the scheduler or the Celery workers run.
    from debusine.server.maintenance import jobs as maintenance_jobs
    from debusine.server.scheduler import jobs
    from debusine.server.worker_pools import jobs as pool_jobs
    from debusine.server.workflows_queue import jobs as workflow_jobs

    assert {
        jobs.schedule_work_requests.name,
        jobs.expire_worker_leases.name,
        maintenance_jobs.fold_metric_counts.name,
        workflow_jobs.sweep_workflows.name,
        pool_jobs.provision_worker_pools.name,
    } == {entry["task"] for entry in schedule.values()}
    assert celery.lease_check_interval(60) == 15.0
    assert celery.lease_check_interval(2) == 1.0
    assert celery.lease_check_interval(3600) == 30.0


@pytest.mark.django_db
def test_local_worker_is_pre_created_once_and_again_for_a_new_database(tmp_path: Path) -> None:
    from debusine.server.db.models import Token, Worker, hash_token_key

    config_dir = tmp_path / "worker"
    devstack.prepare_local_worker(config_dir, 8123)

    assert (config_dir / "config.ini").read_text() == (
        "[General]\napi-url = http://127.0.0.1:8123/api\n"
    )
    activation = config_dir / "activation-token"
    assert activation.stat().st_mode & 0o777 == 0o600
    worker = Worker.objects.get(name=devstack.LOCAL_WORKER_FQDN)
    assert worker.activation_token is not None
    assert worker.activation_token.hash == hash_token_key(activation.read_text().strip())

    # A second start before it registered: the activation token is still good.
    devstack.prepare_local_worker(config_dir, 8124)
    assert Worker.objects.count() == 1
    assert "8124" in (config_dir / "config.ini").read_text()

    # It registered (its own token, enabled); later starts leave it alone.
    token, key = Token.objects.create_with_key(enabled=True)
    worker.token = token
    worker.save()
    (config_dir / "token").write_text(key + "\n")
    devstack.prepare_local_worker(config_dir, 8123)
    assert Worker.objects.count() == 1

    # A new database does not know that token: a new worker is pre-created.
    Worker.objects.all().delete()
    devstack.prepare_local_worker(config_dir, 8123)
    assert not (config_dir / "token").exists()
    assert Worker.objects.filter(name=devstack.LOCAL_WORKER_FQDN).count() == 1


def test_stack_refuses_a_port_something_else_listens_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code = devstack.main(["--port", str(port), "--data-dir", str(tmp_path / "data")])

    assert code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"port {port}, held by PID {os.getpid()} (" in error
    assert "already in use" in error
    # Refused before anything started: no data directory, no services.
    assert not (tmp_path / "data").exists()


def test_port_holders_name_the_listening_process() -> None:
    from debusine.testing.processes import describe_port_holders, port_holders, port_is_taken

    port = free_port()
    assert not port_is_taken(port)
    assert port_holders(port) == []
    assert describe_port_holders(port) == f"port {port}"
    listener = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            f"s = socket.create_server(('127.0.0.1', {port}))\n"
            "print('listening', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "listening\n"
        assert port_is_taken(port)
        [(pid, command)] = port_holders(port)
        assert pid == listener.pid
        assert command.startswith(sys.executable)
    finally:
        listener.kill()
        listener.wait()


def supervise_until(supervisor: Supervisor, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, supervisor.restart_log
        supervisor.check_once()
        time.sleep(0.01)


def test_a_killed_process_is_restarted(capsys: pytest.CaptureFixture[str]) -> None:
    supervisor = Supervisor(devstack.RestartPolicy(initial_delay=0.05))
    first = supervisor.start(sleeper("worker"))
    other = supervisor.start(sleeper("server"))
    try:
        first.kill()
        supervise_until(supervisor, lambda: supervisor.running[0][1] is not first, 10)
        replacement = supervisor.running[0][1]
        assert process_is_alive(replacement.pid)
        assert supervisor.running[1][1] is other  # the others are left alone
        assert supervisor.restart_log == [("worker", first.pid, -signal.SIGKILL, 0.05)]
        output = capsys.readouterr().out
        assert (
            f"The worker process (PID {first.pid}) was killed by SIGKILL;"
            " restarting it in 0.05s." in output
        )
        assert f"Restarted the worker process (PID {replacement.pid})." in output
    finally:
        supervisor.stop_all(timeout=5)


def test_rapid_failures_back_off_then_give_up() -> None:
    policy = devstack.RestartPolicy(
        initial_delay=0.01, max_delay=0.04, stable_after=30, max_rapid_failures=4
    )
    supervisor = Supervisor(policy)
    supervisor.start(ProcessSpec("beat", [sys.executable, "-c", "raise SystemExit(1)"]))
    try:
        with pytest.raises(
            devstack.GaveUpError, match="exited with code 1, its 5th failure in a row"
        ):
            supervisor.supervise(poll_interval=0.01)
        assert [delay for *_, delay in supervisor.restart_log] == [0.01, 0.02, 0.04, 0.04]
    finally:
        supervisor.stop_all(timeout=5)


def test_the_back_off_resets_after_a_stable_run() -> None:
    policy = devstack.RestartPolicy(initial_delay=0.01, stable_after=0.3, max_rapid_failures=1)
    supervisor = Supervisor(policy)
    script = "import time; time.sleep(0.4); raise SystemExit(1)"
    supervisor.start(ProcessSpec("celery", [sys.executable, "-c", script]))
    try:
        supervise_until(supervisor, lambda: len(supervisor.restart_log) == 3, 20)
        # Each run was stable: never a second rapid failure, never a longer delay.
        assert [delay for *_, delay in supervisor.restart_log] == [0.01, 0.01, 0.01]
    finally:
        supervisor.stop_all(timeout=5)


@pytest.mark.parametrize(
    ("code", "reason"), [(2, "exited with code 2"), (0, "exited with code 0")]
)
def test_no_restart_after_a_clean_exit_or_a_configuration_error(code: int, reason: str) -> None:
    supervisor = Supervisor(devstack.RestartPolicy(initial_delay=0.01))
    supervisor.start(
        ProcessSpec("worker", [sys.executable, "-c", f"raise SystemExit({code})"], (2, 3))
    )
    try:
        with pytest.raises(devstack.GaveUpError, match=f"{reason}; not restarting it"):
            supervisor.supervise(poll_interval=0.01)
        assert supervisor.restart_log == []
    finally:
        supervisor.stop_all(timeout=5)
