"""Tests of the `debusine-admin` entry point around an embedded PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from debusine.server.management.main import EXIT_SERVICE_UNAVAILABLE
from debusine.server.project import instance


def test_embedded_database_that_cannot_start_is_one_line_and_exit_3(tmp_path: Path) -> None:
    # A data directory whose recorded database is an embedded cluster that is broken.
    pgdata = tmp_path / instance.EMBEDDED_POSTGRES_DIR
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("16\n")
    instance.write_recorded(
        tmp_path, instance.DATABASE_URL_FILE, f"postgresql://postgres@/debusine?host={pgdata}"
    )
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DEBUSINE_DATABASE_URL", "DEBUSINE_REDIS_URL")
    }
    result = subprocess.run(
        [sys.executable, "-m", "debusine.server.management.main", "check"],
        env={**environment, "DEBUSINE_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == EXIT_SERVICE_UNAVAILABLE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"debusine-admin: cannot start the embedded PostgreSQL in {pgdata}:"
    )


# Runs a command, then says whether the development tooling was loaded on the way.
LOADS_TOOLING = """
import sys
from debusine.server.management.main import main
try:
    main(["diffsettings"])
finally:
    print("tooling loaded:", any(name.startswith("debusine.testing") for name in sys.modules))
"""


def admin_loads_tooling(data_dir: Path, environment: dict[str, str]) -> bool:
    """Whether `debusine-admin diffsettings` on `data_dir` imports debusine.testing."""
    result = subprocess.run(
        [sys.executable, "-c", LOADS_TOOLING],
        env={**environment, "DEBUSINE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("tooling loaded: "), result.stdout
    return last == "tooling loaded: True"


def test_an_instance_without_embedded_database_never_loads_the_tooling(tmp_path: Path) -> None:
    assert not admin_loads_tooling(tmp_path, dict(os.environ))


def test_a_make_run_data_dir_reaches_the_tooling(tmp_path: Path) -> None:
    """The hook is the one way in, and a `make run` data directory takes it."""
    pgdata = tmp_path / instance.EMBEDDED_POSTGRES_DIR
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("16\n")
    instance.write_recorded(
        tmp_path, instance.DATABASE_URL_FILE, f"postgresql://postgres@/debusine?host={pgdata}"
    )
    # A running postmaster (this process stands in for it): nothing to start, only to check.
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{pgdata}\n")
    environment = {
        key: value for key, value in os.environ.items() if key != "DEBUSINE_DATABASE_URL"
    }
    assert admin_loads_tooling(tmp_path, environment)
