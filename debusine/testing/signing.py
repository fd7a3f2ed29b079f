"""
A throwaway signing service: its own database, service key and `debusine-signing` commands.

The signing side is a Django project of its own, so tests never load its settings into the test
process (pytest-django holds the server's): they create a fresh database on the same
PostgreSQL server, run `debusine-signing migrate` and every other signing command as
subprocesses with `DEBUSINE_SIGNING_DATABASE_URL` pointing at it, and read or tamper with it
over plain psycopg connections. Benchmarks use the same helper.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from debusine.server.project import instance
from debusine.testing.embedded import drop_database, ensure_database_exists


class SigningCommandError(Exception):
    """A `debusine-signing` command failed where the caller expected success."""


@dataclass
class SigningInstance:
    """A migrated signing database and the environment of processes that use it."""

    database_url: str
    directory: Path
    environment: dict[str, str] = field(repr=False)

    @property
    def service_key(self) -> Path:
        """The first (sealing) service key file."""
        return Path(self.environment["DEBUSINE_SIGNING_SERVICE_KEYS"].split(",")[0])

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `debusine-signing ARGS`; raise SigningCommandError on failure when `check`."""
        command = [sys.executable, "-m", "debusine.signing.main", *args]
        result = subprocess.run(
            command, env=self.environment, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise SigningCommandError(
                f"debusine-signing {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result


def signing_environment(
    database_url: str, directory: Path, service_keys: list[Path]
) -> dict[str, str]:
    """Environment of signing processes: this database, these keys, no settings file."""
    return {
        **os.environ,
        "DEBUSINE_SIGNING_DATABASE_URL": database_url,
        "DEBUSINE_SIGNING_SERVICE_KEYS": ",".join(str(path) for path in service_keys),
        "DEBUSINE_SIGNING_SETTINGS_FILE": str(directory / "no-settings.toml"),
        # gpg and friends must not find a developer's configuration.
        "HOME": str(directory / "home"),
    }


@contextmanager
def signing_instance(
    *, postgres_url: str, directory: Path, name_prefix: str = "debusine_signing"
) -> Iterator[SigningInstance]:
    """
    Create and migrate a signing database on the PostgreSQL server of `postgres_url` (only its
    server part matters) with a fresh service key in `directory`; drop it at the end.
    """
    name = f"{name_prefix}_{uuid.uuid4().hex[:8]}"
    database_url = instance.with_database_name(postgres_url, name)
    (directory / "home").mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = directory / "0.key"
    signing = SigningInstance(
        database_url, directory, signing_environment(database_url, directory, [key_path])
    )
    ensure_database_exists(database_url)
    try:
        signing.run("generate_service_key", str(key_path))
        signing.run("migrate", "--no-input", "-v", "0")
        yield signing
    finally:
        drop_database(database_url)
