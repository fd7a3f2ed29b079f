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
