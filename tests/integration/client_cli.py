"""
Run the real `debusine` command (the installed console script) in a private HOME.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEBUSINE = str(Path(sys.executable).parent / "debusine")


@dataclass(frozen=True)
class Run:
    """One finished run of the command."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def yaml(self) -> Any:
        return yaml.safe_load(self.stdout)

    def describe(self) -> str:
        return f"debusine {' '.join(self.args)} -> {self.returncode}\n{self.stdout}\n{self.stderr}"


@dataclass(frozen=True)
class Cli:
    """The command for one user: a HOME whose config.ini names one server."""

    home: Path

    @property
    def config_file(self) -> Path:
        return self.home / ".config" / "debusine" / "client" / "config.ini"

    def environment(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home)}

    def run(self, *args: str, stdin: str = "", timeout: float = 60) -> Run:
        result = subprocess.run(
            [DEBUSINE, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.environment(),
            timeout=timeout,
            check=False,
        )
        return Run(args, result.returncode, result.stdout, result.stderr)

    def ok(self, *args: str, stdin: str = "") -> Run:
        run = self.run(*args, stdin=stdin)
        assert run.returncode == 0, run.describe()
        return run

    def fails(self, exit_code: int, *args: str, stdin: str = "") -> Run:
        """Run, expecting `exit_code` and exactly one line on stderr."""
        run = self.run(*args, stdin=stdin)
        assert run.returncode == exit_code, run.describe()
        if exit_code == 3:
            assert run.stderr.count("\n") == 1, run.describe()
            assert run.stderr.startswith("debusine: error: "), run.describe()
        return run


def configured_cli(home: Path, api_url: str, token: str, scope: str = "debusine") -> Cli:
    """A Cli whose configuration was written by `debusine setup`."""
    home.mkdir(parents=True, exist_ok=True)
    cli = Cli(home)
    cli.ok(
        "setup",
        "--server-name",
        "test",
        "--api-url",
        api_url,
        "--scope",
        scope,
        "--token",
        token,
    )
    return cli
