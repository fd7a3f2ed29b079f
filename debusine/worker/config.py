"""
The worker's configuration: where it lives, `config.ini`, and the `token` files.

The configuration directory is the one given with `--config-dir`, else the first existing of
`~/.config/debusine/worker/` and `/etc/debusine/worker/`. It holds `config.ini` (section
`[General]`: `api-url` required, `log-file`, `log-level`, `cache-dir`,
`interruption-notice-url` and `interruption-notice-interval` optional), the
worker's `token` once registered, and optionally a one-shot `activation-token`. Secrets
readable by group or others are refused rather than used, as Debusine workers do.
"""

from __future__ import annotations

import configparser
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CONFIG_FILE = "config.ini"
TOKEN_FILE = "token"  # noqa: S105 - a file name
ACTIVATION_TOKEN_FILE = "activation-token"  # noqa: S105 - a file name

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_LOG_LEVEL = "INFO"


def default_config_dirs() -> list[Path]:
    """The directories searched, in order, when `--config-dir` is not given."""
    return [Path.home() / ".config" / "debusine" / "worker", Path("/etc/debusine/worker")]


def default_cache_dir() -> Path:
    """Where the worker keeps what outlives a work request (its environments), by default."""
    return Path.home() / ".cache" / "debusine" / "worker"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which file and why (one line)."""


@dataclass(frozen=True)
class WorkerConfig:
    """What `config.ini` says, checked."""

    directory: Path
    #: e.g. `https://debusine.example.org/api` (no trailing slash).
    api_url: str
    log_file: Path | None
    log_level: str
    #: Where the worker keeps what outlives a work request (the environment cache).
    cache_dir: Path = field(default_factory=default_cache_dir)
    #: The instance metadata URL that answers 200 once the cloud announced the instance's
    #: interruption (EC2: http://169.254.169.254/latest/meta-data/spot/instance-action);
    #: None: not watched.
    interruption_notice_url: str | None = None
    #: Seconds between two looks at it.
    interruption_notice_interval: float = 5.0

    @property
    def websocket_url(self) -> str:
        """The worker websocket: api-url with its first `http` replaced by `ws`."""
        return self.api_url.replace("http", "ws", 1) + "/ws/1.0/worker/connect/"

    @property
    def token_path(self) -> Path:
        return self.directory / TOKEN_FILE

    @property
    def activation_token_path(self) -> Path:
        return self.directory / ACTIVATION_TOKEN_FILE


def find_config_dir(explicit: Path | None = None) -> Path:
    """The configuration directory to use; raise ConfigError if there is none."""
    if explicit is not None:
        if not explicit.is_dir():
            raise ConfigError(f"configuration directory {explicit} does not exist")
        return explicit
    candidates = default_config_dirs()
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    searched = " or ".join(str(candidate) for candidate in candidates)
    raise ConfigError(f"no configuration directory: create {searched} (or use --config-dir)")


def check_api_url(value: str) -> str:
    """Return the api-url without a trailing slash; raise ConfigError if it is not usable."""
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"api-url {value!r} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ConfigError(f"api-url {value!r} must not have a query or a fragment")
    return url


def check_log_level(value: str, origin: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{origin}: log-level {value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def load_config(
    directory: Path, *, log_file: Path | None = None, log_level: str | None = None
) -> WorkerConfig:
    """
    Read `directory/config.ini`; `log_file` and `log_level` (from the command line) win over
    its values. Raise ConfigError for a missing file, a missing or bad api-url, a bad level.
    """
    path = directory / CONFIG_FILE
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as stream:
            parser.read_file(stream)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, configparser.Error) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"cannot read {path}: {first_line}") from None
    if not parser.has_section("General"):
        raise ConfigError(f"{path} has no [General] section")
    general = parser["General"]
    if "api-url" not in general:
        raise ConfigError(f"{path}: [General] api-url is required")
    api_url = check_api_url(general["api-url"])
    if log_file is None and general.get("log-file", "").strip():
        log_file = Path(general["log-file"].strip())
    if log_level is None:
        log_level = general.get("log-level", DEFAULT_LOG_LEVEL)
    cache_dir = default_cache_dir()
    if general.get("cache-dir", "").strip():
        # A relative cache-dir is relative to the configuration directory.
        cache_dir = directory / Path(general["cache-dir"].strip()).expanduser()
    notice_url = general.get("interruption-notice-url", "").strip() or None
    if notice_url is not None and urlsplit(notice_url).scheme not in ("http", "https"):
        raise ConfigError(f"{path}: interruption-notice-url {notice_url!r} is not an http URL")
    interval_text = general.get("interruption-notice-interval", "5").strip()
    try:
        interval = float(interval_text)
    except ValueError:
        interval = -1.0
    if not 0 < interval <= 3600:
        raise ConfigError(
            f"{path}: interruption-notice-interval {interval_text!r} is not a number of "
            "seconds in (0, 3600]"
        )
    return WorkerConfig(
        directory=directory,
        api_url=api_url,
        log_file=log_file,
        log_level=check_log_level(log_level, str(path)),
        cache_dir=cache_dir,
        interruption_notice_url=notice_url,
        interruption_notice_interval=interval,
    )


def read_secret(path: Path) -> str | None:
    """
    The secret in `path` (surrounding whitespace removed), None if the file does not exist.

    Raise ConfigError when group or others have any permission on it, or when it is empty.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    with os.fdopen(descriptor, encoding="utf-8") as stream:
        mode = os.fstat(stream.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}): "
                f"run chmod 600 {path}"
            )
        try:
            secret = stream.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read {path}: {error}") from None
    if not secret:
        raise ConfigError(f"{path} is empty")
    return secret


def check_secrets(config: WorkerConfig) -> None:
    """Refuse unsafe `token`/`activation-token` files at startup, before anything else."""
    read_secret(config.token_path)
    read_secret(config.activation_token_path)


def generate_token() -> str:
    """A new worker token: 64 lowercase hexadecimal characters (32 random bytes)."""
    return secrets.token_hex(32)


def write_token(config: WorkerConfig, token: str) -> None:
    """Save `token` as the worker's token, readable by its owner only (written atomically)."""
    temporary = config.token_path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # The mode given to open() is filtered by the umask and ignored for an existing file.
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, f"{token}\n".encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    temporary.replace(config.token_path)
    logging.getLogger(__name__).debug("token written to %s", config.token_path)
