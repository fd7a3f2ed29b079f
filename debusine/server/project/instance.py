"""
Work out which instance a process belongs to: its data directory, database and Redis.

`make run DATA_DIR=X` and `DEBUSINE_DATA_DIR=X debusine-admin ...` must reach the same
database. The development stack records the URLs it chose (configured services, the ones on
127.0.0.1, or embedded ones it started) in files under the data directory; every other process
of the instance reads them from there. Nothing here starts a process or opens a connection.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import debusine

DATABASE_URL_FILE = "database-url"
REDIS_URL_FILE = "redis-url"
SECRET_KEY_FILE = "secret-key"  # noqa: S105
CLIENT_CONFIG_FILE = "client-config.ini"
# Holds the PID of the running development stack, so other processes know it owns the services.
DEVSTACK_PID_FILE = "devstack.pid"
# Subdirectories of the data directory holding the embedded services' state.
EMBEDDED_POSTGRES_DIR = "postgres"
EMBEDDED_REDIS_DIR = "redis"

#: Set to "1" by the ASGI entry point before Django loads the settings: the process serves
#: requests, and its requests (each in a thread of its own) share a connection pool.
SERVING_ASGI_VARIABLE = "DEBUSINE_SERVING_ASGI"

DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/debusine"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SYSTEM_DATA_DIR = Path("/var/lib/debusine/server")


def source_checkout() -> Path | None:
    """Return the root of the source checkout this package runs from, if any."""
    root = Path(debusine.__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "Makefile").is_file():
        return root
    return None


def default_data_dir() -> Path:
    """Return `.data/` of the source checkout, or the system data directory."""
    checkout = source_checkout()
    return checkout / ".data" if checkout is not None else SYSTEM_DATA_DIR


def resolve_directory(configured: Path, default: Path) -> Path:
    """Return a directory setting's value, or `default` when it is empty (`Path()`)."""
    return default if str(configured) in ("", ".") else Path(configured)


def resolve_data_dir(configured: Path) -> Path:
    """Return the absolute data directory from the DEBUSINE_DATA_DIR setting."""
    return resolve_directory(configured, default_data_dir()).expanduser().absolute()


def read_recorded(data_dir: Path, name: str) -> str | None:
    """Return the stripped contents of a file recorded in the data directory, if present."""
    try:
        value = (data_dir / name).read_text().strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return value or None


def write_recorded(data_dir: Path, name: str, value: str, *, private: bool = False) -> Path:
    """
    Record `value` in a file of the data directory, replacing it atomically.

    `private` files (secrets, tokens) are created readable by their owner only: they never
    exist, even briefly, with wider permissions.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / name
    temporary = data_dir / f".{name}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value if value.endswith("\n") else value + "\n")
    if not private:
        temporary.chmod(0o644)
    temporary.replace(path)
    return path


def ensure_secret_key(data_dir: Path) -> str:
    """Return the instance's secret key, generating `<data dir>/secret-key` the first time."""
    existing = read_recorded(data_dir, SECRET_KEY_FILE)
    if existing is not None:
        return existing
    key = secrets.token_urlsafe(50)
    write_recorded(data_dir, SECRET_KEY_FILE, key, private=True)
    return key


def database_name_for(data_dir: Path) -> str:
    """
    Return the database name the development stack uses for `data_dir` on a shared server.

    Derived from the absolute path, so that two checkouts (or two data directories) using the
    PostgreSQL on 127.0.0.1 never share a database.
    """
    digest = hashlib.sha256(str(data_dir.absolute()).encode()).hexdigest()[:10]
    return f"debusine_{digest}"


def with_database_name(url: str, name: str) -> str:
    """Return the PostgreSQL URL `url` pointing at database `name` on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name)))


def redact_url(url: str) -> str:
    """Return `url` with its password hidden, fit for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_url(configured: str, data_dir: Path, recorded: str, default: str) -> str:
    """Return the configured URL, else the one recorded for the instance, else the default."""
    if configured:
        return configured
    return read_recorded(data_dir, recorded) or default


@dataclass(frozen=True)
class DatabaseParameters:
    """Connection parameters of a `postgresql://` URL, in Django's DATABASES terms."""

    name: str
    user: str
    password: str
    host: str
    port: str
    options: dict[str, str]


def parse_database_url(url: str) -> DatabaseParameters:
    """Parse a PostgreSQL URL; `?host=/path` selects a Unix socket directory."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"database URL must start with postgresql://, got {url!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    host = query.pop("host", None) or unquote(parts.hostname or "")
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ValueError(f"database URL names no database: {url!r}")
    return DatabaseParameters(
        name=name,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        host=host,
        port=str(parts.port or ""),
        options=query,
    )


def may_use_embedded_postgres(data_dir: Path, database_url: str) -> bool:
    """
    Whether `database_url` may reach the embedded PostgreSQL of a development stack in `data_dir`.

    Reads files only: the data directory holds an initialised cluster (only the development
    stack creates `postgres/` there) and the URL connects through a Unix socket. A production
    instance has no such cluster, so `debusine-admin` learns here, without loading the
    development tooling (`debusine.testing`), that there is nothing to start.
    """
    if not (data_dir / EMBEDDED_POSTGRES_DIR / "PG_VERSION").is_file():
        return False
    try:
        host = parse_database_url(database_url).host
    except ValueError:
        return False
    return host.startswith("/")


def kombu_redis_url(url: str) -> str:
    """
    The Redis URL in kombu's (Celery's) spelling.

    redis-py and Channels take `unix:///path/redis.sock?db=N`; kombu wants
    `redis+socket:///path/redis.sock?virtual_host=N`. Other URLs are the same for both.
    """
    if not url.startswith("unix://"):
        return url
    parsed = urlsplit(url)
    query = parse_qs(parsed.query)
    database = query.get("db", ["0"])[0]
    return f"redis+socket://{parsed.path}?virtual_host={database}"


#: Redis key prefix of an instance that is not a development stack's.
DEFAULT_REDIS_KEY_PREFIX = "debusine"


def resolve_redis_key_prefix(configured: str, data_dir: Path) -> str:
    """
    The configured Redis key prefix, else one of the data directory's own when the development
    stack recorded its services there (two stacks sharing the Redis on 127.0.0.1 must not read
    each other's messages), else DEFAULT_REDIS_KEY_PREFIX.
    """
    if configured:
        return configured
    if read_recorded(data_dir, REDIS_URL_FILE) is not None:
        return database_name_for(data_dir)
    return DEFAULT_REDIS_KEY_PREFIX
