"""Errors of the client: each carries the one line the command prints before exiting."""

from __future__ import annotations

import json
from typing import Any


class ClientError(Exception):
    """Something went wrong talking to the server or with the configuration (exit code 3)."""

    exit_code = 3


class UsageError(ClientError):
    """Bad arguments or unusable local input (exit code 2)."""

    exit_code = 2


class LocalFileError(UsageError):
    """A local file could not be read or written (any OSError: EIO, EACCES, EISDIR, ENOSPC)."""

    @classmethod
    def from_os_error(cls, error: OSError, path: object, action: str = "read") -> LocalFileError:
        """`cannot read PATH: No such file or directory` (the one line the client prints)."""
        reason = error.strerror or str(error) or type(error).__name__
        return cls(f"cannot {action} {path}: {reason}")


class ConfigError(ClientError):
    """The configuration file is missing, unreadable, unsafe or incomplete."""


class ProblemError(ClientError):
    """The server answered with an RFC 7807 problem (`application/problem+json`)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(self.one_line())

    @property
    def title(self) -> str:
        return str(self.problem.get("title", "Error"))

    def one_line(self) -> str:
        parts = [f"{self.title} (HTTP {self.status})"]
        detail = self.problem.get("detail")
        if detail not in (None, "", {}, []):
            parts.append(detail if isinstance(detail, str) else json.dumps(detail))
        errors = self.problem.get("validation_errors")
        if errors:
            parts.append(f"validation errors: {json.dumps(errors, sort_keys=True)}")
        return ": ".join(parts).replace("\n", " ")


class ServerUnreachableError(ClientError):
    """The connection failed or timed out: nothing, or not all, reached the server."""


class UploadError(ClientError):
    """A file could not be uploaded (hash mismatches, unexpected answers, lost connection)."""


class DownloadError(ClientError):
    """A file could not be downloaded, or what arrived is not what the artifact lists."""
