"""
Harness for the compatibility tests: the real `debusine` client against a real server process.

`debusine_server` is the integration harness's throwaway server (one per test worker);
`reference_cli` runs the Debian `debusine` 0.11.3 client, configured for that server through
`~/.config/debusine/client/config.ini` in a private HOME, exactly as a user would set it up.
`installed_reference_worker` is the Debian `debusine-worker` 0.11.3 daemon, unpacked with it.
`cli` runs Debian's 0.16 client (in the trixie root of `debusine.testing.reference_v016`) as a
contributor of the System workspace, `v016_owner_cli` as an owner of it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from debusine.testing.reference_client import (
    ReferenceClient,
    ReferenceClientError,
    ReferenceWorker,
    reference_client,
    reference_worker,
)
from debusine.testing.reference_v016 import ReferenceV016Error, V016Root, v016_root
from tests.integration.conftest import LiveServer, debusine_server

__all__ = ["CliRun", "ReferenceCli", "V016Cli", "V016Run", "debusine_server"]

SERVER_SECTION = "compat"


@dataclass(frozen=True)
class CliRun:
    """One finished run of the client."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def yaml(self) -> Any:
        """The YAML the client printed on stdout."""
        return yaml.safe_load(self.stdout)

    def describe(self) -> str:
        return (
            f"debusine {' '.join(self.args)} exited with {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


@dataclass(frozen=True)
class ReferenceCli:
    """The reference client, configured for the live server with a contributor's token."""

    client: ReferenceClient
    server: LiveServer
    home: Path

    def run(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> CliRun:
        """Run `debusine ARGS`, whatever its exit status."""
        result = self.client.run(*args, home=self.home, stdin=stdin, cwd=cwd or self.home)
        return CliRun(args, result.returncode, result.stdout, result.stderr)

    def ok(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> CliRun:
        """Run `debusine ARGS`; fail the test unless it exits with 0."""
        run = self.run(*args, stdin=stdin, cwd=cwd)
        assert run.returncode == 0, run.describe()
        return run


def write_client_config(home: Path, *, api_url: str, token: str, scope: str = "debusine") -> Path:
    """Write the client's default config file under `home`; return its path."""
    config = home / ".config" / "debusine" / "client" / "config.ini"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"[General]\ndefault-server = {SERVER_SECTION}\n\n"
        f"[server:{SERVER_SECTION}]\napi-url = {api_url}\nscope = {scope}\ntoken = {token}\n"
    )
    return config


@pytest.fixture(scope="session")
def installed_reference_client() -> ReferenceClient:
    """The unpacked Debian client (fetched from the archive on the first run)."""
    try:
        return reference_client()
    except ReferenceClientError as error:
        # Never a skip: a compatibility suite that silently runs nothing proves nothing.
        pytest.fail(f"cannot get the reference debusine client: {error}", pytrace=False)


@pytest.fixture(scope="session")
def installed_reference_worker() -> ReferenceWorker:
    """The unpacked Debian worker daemon (fetched together with the client)."""
    try:
        return reference_worker()
    except ReferenceClientError as error:
        pytest.fail(f"cannot get the reference debusine-worker: {error}", pytrace=False)


@pytest.fixture
def reference_cli(
    installed_reference_client: ReferenceClient,
    debusine_server: LiveServer,
    tmp_path: Path,
) -> ReferenceCli:
    """The reference client with a fresh HOME holding a config for the live server."""
    home = tmp_path / "home"
    write_client_config(home, api_url=debusine_server.api_url, token=debusine_server.token)
    return ReferenceCli(client=installed_reference_client, server=debusine_server, home=home)


# Debian's 0.16 client


#: A finished run of the 0.16 client: the same record as the 0.11.3 client's.
V016Run = CliRun


@dataclass(frozen=True)
class V016Cli:
    root: V016Root
    server: LiveServer
    home: Path

    def run(self, *args: str, stdin: str | None = None) -> V016Run:
        result = self.root.run_client(*args, home=self.home, stdin=stdin)
        return V016Run(args, result.returncode, result.stdout, result.stderr)

    def ok(self, *args: str, stdin: str | None = None) -> V016Run:
        run = self.run(*args, stdin=stdin)
        assert run.returncode == 0, run.describe()
        assert "Traceback" not in run.stderr, run.describe()
        return run


@pytest.fixture(scope="session")
def installed_v016() -> V016Root:
    try:
        return v016_root()
    except ReferenceV016Error as error:
        pytest.fail(f"cannot build the Debusine 0.16 root: {error}", pytrace=False)


@pytest.fixture
def cli(installed_v016: V016Root, debusine_server: LiveServer, tmp_path: Path) -> V016Cli:
    """The 0.16 client as the server's contributor of the System workspace."""
    home = tmp_path / "home"
    write_client_config(home, api_url=debusine_server.api_url, token=debusine_server.token)
    # The client runs as root in the root: let it read the test's directories.
    tmp_path.chmod(0o755)
    return V016Cli(root=installed_v016, server=debusine_server, home=home)


@pytest.fixture
def v016_owner_cli(cli: V016Cli, debusine_server: LiveServer) -> V016Cli:
    """The 0.16 client as an owner of the System workspace (a new user each time)."""
    username = f"owner-{uuid.uuid4().hex[:8]}"
    token = debusine_server.instance.create_contributor(username)
    debusine_server.admin("workspace", "grant_role", "System", "owner", f"{username}-contributors")
    home = cli.home.parent / "owner-home"
    write_client_config(home, api_url=debusine_server.api_url, token=token)
    return V016Cli(root=cli.root, server=debusine_server, home=home)
