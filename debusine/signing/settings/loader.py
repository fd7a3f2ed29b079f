"""
The signing service's settings as configured: `defaults.py`, then the TOML file, then the
environment (later wins), each value converted to its default's type.

It is the server's override mechanism (`debusine.server.project.settings_loader`) applied to
another file and another set of declared settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from debusine.server.project.settings_loader import SettingsError, convert, read_settings_file

DEFAULT_SETTINGS_FILE = Path("/etc/debusine/signing/settings.toml")
SETTINGS_FILE_VARIABLE = "DEBUSINE_SIGNING_SETTINGS_FILE"


def signing_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return every setting declared in `defaults.py` with its overrides applied."""
    from debusine.signing.settings import defaults

    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {
        name: getattr(defaults, name) for name in dir(defaults) if name.isupper()
    }
    settings_file = Path(environ.get(SETTINGS_FILE_VARIABLE, str(DEFAULT_SETTINGS_FILE)))
    from_file = read_settings_file(settings_file)
    unknown = sorted(set(from_file) - set(values))
    if unknown:
        raise SettingsError(f"unknown settings in {settings_file}: {', '.join(unknown)}")
    for name, default in list(values.items()):
        if name in from_file:
            values[name] = convert(name, default, from_file[name], str(settings_file))
        if name in environ:
            values[name] = convert(name, default, environ[name], f"${name}")
    return values
