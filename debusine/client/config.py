"""
The client configuration file, `~/.config/debusine/client/config.ini`.

    [General]
    default-server = debian

    [server:debian]
    api-url = https://debusine.debian.net/api
    scope = debian
    token = <64 hex characters>

The file holds tokens, so it must not be readable by other users: a file with any group or
other permission bit is refused, and `setup` writes it with mode 0600.
"""

from __future__ import annotations

import configparser
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from debusine.client.errors import ConfigError

SERVER_SECTION_PREFIX = "server:"
GENERAL_SECTION = "General"
DEFAULT_SERVER_KEY = "default-server"
#: The only keys a server section may hold (Debusine's client refuses any other, too).
SERVER_KEYS = frozenset({"api-url", "scope", "token"})


def default_config_path() -> Path:
    """Where the configuration lives unless `--config-file` says otherwise."""
    return Path.home() / ".config" / "debusine" / "client" / "config.ini"


@dataclass(frozen=True)
class ServerConfig:
    """Everything needed to talk to one server."""

    name: str
    api_url: str
    scope: str
    token: str | None


def check_api_url(api_url: str) -> str:
    """Return the api-url without a trailing `/`; raise ConfigError unless it is http(s)."""
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"api-url {api_url!r} is not an http:// or https:// URL")
    return api_url.rstrip("/")


def read_config(path: Path) -> configparser.ConfigParser:
    """Parse the file, refusing it when missing, unsafe or malformed."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} does not exist: create it with `debusine setup`"
        ) from None
    except OSError as error:
        raise ConfigError(f"cannot read configuration file {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"configuration file {path} is accessible by other users (mode "
            f"{stat.S_IMODE(mode):04o}) and holds tokens: run `chmod 600 {path}`"
        )
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as config_file:
            parser.read_file(config_file)
    except (configparser.Error, UnicodeDecodeError) as error:
        message = str(error).replace("\n", " ")
        raise ConfigError(f"configuration file {path} is invalid: {message}") from None
    except OSError as error:
        raise ConfigError(f"cannot read configuration file {path}: {error.strerror}") from None
    return parser


def server_names(parser: configparser.ConfigParser) -> list[str]:
    return [
        section.removeprefix(SERVER_SECTION_PREFIX)
        for section in parser.sections()
        if section.startswith(SERVER_SECTION_PREFIX)
    ]


def _server_from_section(parser: configparser.ConfigParser, name: str, path: Path) -> ServerConfig:
    section = parser[SERVER_SECTION_PREFIX + name]
    unknown = sorted(set(section) - SERVER_KEYS)
    if unknown:
        raise ConfigError(
            f"configuration file {path}: unknown key(s) {', '.join(unknown)} in "
            f"[server:{name}] (allowed: {', '.join(sorted(SERVER_KEYS))})"
        )
    for key in ("api-url", "scope"):
        if not section.get(key):
            raise ConfigError(f"configuration file {path}: [server:{name}] has no {key}")
    return ServerConfig(
        name=name,
        api_url=check_api_url(section["api-url"]),
        scope=section["scope"],
        token=section.get("token") or None,
    )


def select_server(
    parser: configparser.ConfigParser,
    path: Path,
    server: str | None = None,
    scope: str | None = None,
) -> ServerConfig:
    """
    The server to use: `server` (a section name, or `FQDN/SCOPE`), else the default server.

    `scope` overrides the scope the configuration gives.
    """
    known = server_names(parser)
    if server is None:
        server = parser.get(GENERAL_SECTION, DEFAULT_SERVER_KEY, fallback=None)
        if not server:
            raise ConfigError(
                f"configuration file {path} names no [General] default-server: "
                f"use --server (known servers: {', '.join(known) or 'none'})"
            )
    if server in known:
        selected = _server_from_section(parser, server, path)
    elif "/" in server:
        host, _, wanted_scope = server.partition("/")
        matches = [
            candidate
            for candidate in (_server_from_section(parser, name, path) for name in known)
            if urlsplit(candidate.api_url).hostname == host and candidate.scope == wanted_scope
        ]
        if not matches:
            raise ConfigError(f"no server in {path} has host {host!r} and scope {wanted_scope!r}")
        selected = matches[0]
    else:
        raise ConfigError(
            f"server {server!r} is not configured in {path} "
            f"(known servers: {', '.join(known) or 'none'})"
        )
    if scope:
        selected = ServerConfig(selected.name, selected.api_url, scope, selected.token)
    return selected


def write_server(
    path: Path, server: ServerConfig, *, make_default: bool
) -> configparser.ConfigParser:
    """Add or replace one server in the file (created if needed) and write it with mode 0600."""
    parser = configparser.ConfigParser(interpolation=None)
    if path.exists():
        parser = read_config(path)
    section = SERVER_SECTION_PREFIX + server.name
    parser[section] = {"api-url": check_api_url(server.api_url), "scope": server.scope}
    if server.token:
        parser[section]["token"] = server.token
    if not parser.has_section(GENERAL_SECTION):
        parser.add_section(GENERAL_SECTION)
    if make_default or not parser.get(GENERAL_SECTION, DEFAULT_SERVER_KEY, fallback=None):
        parser[GENERAL_SECTION][DEFAULT_SERVER_KEY] = server.name
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    # Created 0600 from the start: the token is never readable by others, not even briefly.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as config_file:
        parser.write(config_file)
    temporary.chmod(0o600)
    temporary.replace(path)
    return parser
