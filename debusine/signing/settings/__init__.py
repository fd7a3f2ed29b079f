"""
Django settings of the signing service: its documented defaults, their overrides, and what
follows from them.

There is exactly one database, the signing database. Nothing here reads the server's settings
(`DEBUSINE_DATABASE_URL` and friends): a signing process cannot reach the server's database
even by mistake.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from debusine.server.project.instance import parse_database_url
from debusine.signing.settings import defaults
from debusine.signing.settings.loader import signing_settings

globals().update(signing_settings())

DEBUSINE_SIGNING_SERVICE_KEYS: list[Path] = [
    Path(path) for path in globals()["DEBUSINE_SIGNING_SERVICE_KEYS"]
]

_db = parse_database_url(globals()["DEBUSINE_SIGNING_DATABASE_URL"])
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.name,
        "USER": _db.user,
        "PASSWORD": _db.password,
        "HOST": _db.host,
        "PORT": _db.port,
        "OPTIONS": dict(_db.options),
        "CONN_MAX_AGE": 0,
    }
}

INSTALLED_APPS = ["debusine.signing"]
# The signing service has no web server: no URLs, no sessions, no secret worth keeping.
SECRET_KEY = "debusine-signing-has-no-web-server"  # noqa: S105
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "debusine": {
            "handlers": ["console"],
            "level": globals()["DEBUSINE_SIGNING_LOG_LEVEL"],
            "propagate": False,
        },
        "django": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

__all__ = ["defaults"]

os.environ["DJANGO_SETTINGS_MODULE"] = "debusine.signing.settings"
