"""
Read setting overrides from a TOML file and from the environment.

Every setting that users may change is declared, with its default and a comment, in
`defaults.py`. An override is accepted only for a declared setting and is converted to the
type of its default; a value that does not convert stops the process with a message naming the
setting and the source, so a typo never silently falls back to a default.

Order (later wins): defaults.py, then the TOML file (`/etc/debusine/server/settings.toml`, or
the path in `DEBUSINE_SETTINGS_FILE`), then `DEBUSINE_*` environment variables. A setting
named `DEBUSINE_X` is read from the environment variable of the same name; a Django setting
such as `DEBUG` is read from `DEBUSINE_DEBUG`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

DEFAULT_SETTINGS_FILE = Path("/etc/debusine/server/settings.toml")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(Exception):
    """A setting override could not be understood."""


def env_name(setting: str) -> str:
    """Return the environment variable that overrides `setting`."""
    return setting if setting.startswith("DEBUSINE_") else f"DEBUSINE_{setting}"


def convert(setting: str, default: Any, raw: Any, source: str) -> Any:
    """Convert `raw` to the type of `default`, or raise SettingsError."""
    where = f"{setting} (from {source})"
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"expected a boolean, got {raw!r}")
        if isinstance(default, int):
            if isinstance(raw, bool):
                raise ValueError(f"expected an integer, got {raw!r}")
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(str(raw)).expanduser()
        if isinstance(default, list | tuple):
            if isinstance(raw, list):
                return [str(item) for item in raw]
            return [item.strip() for item in str(raw).split(",") if item.strip()]
        if isinstance(default, str) or default is None:
            if not isinstance(raw, str | int | float):
                raise ValueError(f"expected a string, got {raw!r}")
            return str(raw)
    except ValueError as exc:
        raise SettingsError(f"invalid value for {where}: {exc}") from exc
    raise SettingsError(f"{where} cannot be overridden (type {type(default).__name__})")


def read_settings_file(path: Path) -> dict[str, Any]:
    """Return the top-level table of the TOML settings file, or {} if it does not exist."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}") from exc


def apply_overrides(
    namespace: MutableMapping[str, Any],
    overridable: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Apply file and environment overrides for the settings in `overridable` to `namespace`."""
    environ = os.environ if environ is None else environ
    settings_file = Path(environ.get("DEBUSINE_SETTINGS_FILE", str(DEFAULT_SETTINGS_FILE)))
    from_file = read_settings_file(settings_file)
    unknown = sorted(set(from_file) - set(overridable))
    if unknown:
        raise SettingsError(f"unknown settings in {settings_file}: {', '.join(unknown)}")
    for name, default in overridable.items():
        if name in from_file:
            namespace[name] = convert(name, default, from_file[name], str(settings_file))
        variable = env_name(name)
        if variable in environ:
            namespace[name] = convert(name, default, environ[variable], f"${variable}")


def declared_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """
    Return every setting declared in `defaults.py` with its overrides applied.

    These are the values as configured, before anything is worked out from them (an empty
    DEBUSINE_DATABASE_URL stays empty): the development stack decides from them which services
    to use before Django's settings are loaded.
    """
    from debusine.server.project.settings import defaults

    values = {name: getattr(defaults, name) for name in dir(defaults) if name.isupper()}
    apply_overrides(values, dict(values), environ)
    return values
