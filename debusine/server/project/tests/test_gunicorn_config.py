"""
The server's gunicorn configuration: what the arbiter preloads, and its refusal to fork while
it holds a connection or runs a thread.

Each check runs in a fresh interpreter, as the arbiter does: the test process has imported far
more than a server would, and holds its own connections and threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from django.conf import settings

from debusine.server.project import instance

#: Modules a server process must not import unless a store of the S3 backend is used.
S3_MODULES = ["boto3", "botocore", "debusine.server.file_stores.s3"]


def run_python(code: str) -> Any:
    """Run `code` in a fresh interpreter with the test settings; return what it prints (JSON)."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "debusine.server.project.settings",
        # Any database of the test server will do: the checks only connect.
        "DEBUSINE_DATABASE_URL": instance.with_database_name(
            settings.DEBUSINE_DATABASE_URL, "postgres"
        ),
        "DEBUSINE_REDIS_URL": settings.DEBUSINE_REDIS_URL,
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_preloaded_server_has_imported_the_tasks_but_not_s3() -> None:
    loaded = run_python(
        f"""
        import json, sys
        from debusine.server.project import gunicorn_config
        import debusine.server.project.asgi
        gunicorn_config.warm_up()
        from debusine.tasks.base import BUILTIN_TASKS
        tasks = [target.split(":")[0] for target in BUILTIN_TASKS.values()]
        s3 = {S3_MODULES!r}
        found = {{
            "tasks": all(name in sys.modules for name in tasks),
            "s3": [name for name in s3 if name in sys.modules],
            "worker modules": [
                name for name in gunicorn_config.WORKER_MODULES if name not in sys.modules
            ],
        }}
        from debusine.server.file_stores import backend_class
        backend_class("Local")
        found["s3 after Local"] = [name for name in s3 if name in sys.modules]
        backend_class("S3")
        found["s3 after S3"] = [name for name in s3 if name in sys.modules]
        print(json.dumps(found))
        """
    )
    assert loaded == {
        "tasks": True,
        "s3": [],
        # What each worker would import after the fork is imported in the arbiter instead.
        "worker modules": [],
        "s3 after Local": [],
        "s3 after S3": S3_MODULES,
    }


def test_fork_hazards_lists_connections_sockets_and_threads() -> None:
    found = run_python(
        """
        import json, os, socket, threading
        import django
        django.setup()
        from django.db import connection
        from debusine.server.project import gunicorn_config

        found = {"clean": gunicorn_config.fork_hazards()}
        connection.ensure_connection()
        found["database"] = gunicorn_config.fork_hazards()
        connection.close()
        found["closed"] = gunicorn_config.fork_hazards()
        left, right = socket.socketpair()
        found["socket"] = gunicorn_config.fork_hazards()
        # Standard streams (the journal's socket under systemd) and datagram sockets (syslog)
        # are shared with the workers on purpose.
        os.dup2(left.fileno(), 0)
        left.close()
        peer = right
        left, right = socket.socketpair(type=socket.SOCK_DGRAM)
        # Only the peer of standard input is reported: it is not a standard stream.
        found["standard streams, datagrams"] = gunicorn_config.fork_hazards()
        left.close()
        right.close()
        peer.close()
        found["peer closed"] = gunicorn_config.fork_hazards()
        threading.Thread(target=threading.Event().wait, name="lingering", daemon=True).start()
        found["thread"] = gunicorn_config.fork_hazards()

        class Server:
            class log:
                @staticmethod
                def info(*args):
                    pass

        try:
            gunicorn_config.when_ready(Server())
            found["refused"] = None
        except gunicorn_config.ForkSafetyError as error:
            found["refused"] = str(error)
        print(json.dumps(found))
        """
    )
    assert found["clean"] == []
    # The database connection is reported twice: as Django's connection and as its socket.
    assert found["database"][0] == "database connection 'default' is open"
    assert any(hazard.startswith("socket ") for hazard in found["database"][1:])
    assert found["closed"] == []
    assert len(found["socket"]) == 2  # both ends of the pair
    assert all(hazard.startswith("socket unix:") for hazard in found["socket"])
    assert len(found["standard streams, datagrams"]) == 1
    assert found["standard streams, datagrams"][0] in found["socket"]
    assert found["peer closed"] == []
    assert found["thread"] == ["thread 'lingering' is running"]
    assert found["refused"] == (
        "the server cannot fork its workers safely: thread 'lingering' is running"
    )


def test_workers_default_to_twice_the_cores_plus_one() -> None:
    from debusine.server.project.gunicorn_config import default_workers

    assert default_workers(0) == 2 * (os.cpu_count() or 1) + 1
    assert default_workers(3) == 3


def test_workers_come_from_the_setting(tmp_path: Any) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("DEBUSINE_SERVER_WORKERS = 7\n")
    environment = {
        name: value for name, value in os.environ.items() if name != "DEBUSINE_SERVER_WORKERS"
    }
    code = "from debusine.server.project import gunicorn_config; print(gunicorn_config.workers)"
    printed = subprocess.run(
        [sys.executable, "-c", code],
        env={**environment, "DEBUSINE_SETTINGS_FILE": str(settings_file)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed.strip() == "7"
    from_environment = subprocess.run(
        [sys.executable, "-c", code],
        env={**environment, "DEBUSINE_SERVER_WORKERS": "2"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert from_environment.strip() == "2"
