"""
The real `debusine-admin` executable, run in a subprocess against the test database.

In-process tests (`call_command`) see CommandError objects; operators and scripts see exit
codes and stderr, which these tests check: 0 on success, 2 for a malformed command line
(argparse), 3 for input the command understood but cannot act on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from debusine.server.db.models import Worker

DEBUSINE_ADMIN = Path(sys.executable).parent / "debusine-admin"


def test_database_url() -> str:
    """A DEBUSINE_DATABASE_URL reaching the database this test runs on."""
    params = connection.settings_dict
    credentials = quote(params["USER"] or "")
    if params["PASSWORD"]:
        credentials += ":" + quote(params["PASSWORD"])
    netloc = f"{credentials}@" if credentials else ""
    netloc += f"{params['HOST']}:{params['PORT'] or 5432}"
    return f"postgresql://{netloc}/{quote(params['NAME'])}"


test_database_url.__test__ = False  # type: ignore[attr-defined]


def debusine_admin(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DEBUSINE_DATABASE_URL": test_database_url()}
    return subprocess.run(
        [str(DEBUSINE_ADMIN), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


# The commands run in another process: they must see committed data (`transactional_db`),
# and what they commit must be visible here.
def test_exit_codes_of_the_real_executable(transactional_db: None) -> None:
    created = debusine_admin("worker", "create", "cli.example.org")
    assert (created.returncode, created.stderr) == (0, "")
    assert len(created.stdout.strip()) == 64
    assert Worker.objects.filter(name="cli-example-org").exists()

    listed = debusine_admin("worker", "list", "--yaml")
    assert listed.returncode == 0
    assert "name: cli-example-org" in listed.stdout

    usage = debusine_admin("worker", "create", "--worker-type", "celery", "x.example.org")
    assert usage.returncode == 2
    assert "invalid choice: 'celery'" in usage.stderr

    bad_input = debusine_admin("workspace", "create", "nope/team")
    assert bad_input.returncode == 3
    assert bad_input.stderr == "CommandError: scope 'nope' does not exist\n"
    assert bad_input.stdout == ""

    bad_yaml = debusine_admin(
        "worker", "edit_metadata", "cli-example-org", "--set", "-", stdin="[unclosed"
    )
    assert bad_yaml.returncode == 3
    assert len(bad_yaml.stderr.splitlines()) == 1
    assert Worker.objects.get(name="cli-example-org").static_metadata == {}


def test_old_spellings_keep_their_exit_codes(transactional_db: None) -> None:
    created = debusine_admin("create_user", "cli-carol", "carol@example.org")
    assert (created.returncode, created.stderr) == (0, "")

    for create in (["token", "create"], ["create_token"]):
        key = debusine_admin(*create, "cli-carol")
        assert (key.returncode, key.stderr, len(key.stdout.strip())) == (0, "", 64)
        unknown = debusine_admin(*create, "ghost")
        assert (unknown.returncode, unknown.stderr) == (
            3,
            "CommandError: user 'ghost' does not exist\n",
        )
    for delete in (["token", "delete"], ["delete_tokens"]):
        assert debusine_admin(*delete, "--username", "a", "--token", "b").returncode == 2

    old_list = debusine_admin("list_tokens", "--username", "cli-carol", "--yaml")
    new_list = debusine_admin("token", "list", "--username", "cli-carol", "--yaml")
    assert old_list.returncode == new_list.returncode == 0
    assert old_list.stdout == new_list.stdout
    assert old_list.stdout.count("owner: cli-carol") == 2

    helped = debusine_admin("list_work_requests", "--help")
    assert helped.returncode == 0
    assert "use that command instead" in " ".join(helped.stdout.split())
    assert "debusine-admin work_request list" in " ".join(helped.stdout.split())
