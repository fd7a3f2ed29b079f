"""
Typed access to the signing service's settings.

The type checker knows the server's settings module only (one `django_settings_module` per
project), so the signing code reads its own settings through these functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings


def _setting(name: str) -> Any:
    return getattr(settings, name)


def service_key_paths() -> list[Path]:
    """DEBUSINE_SIGNING_SERVICE_KEYS: the first seals, all open."""
    return [Path(path) for path in _setting("DEBUSINE_SIGNING_SERVICE_KEYS")]


def uefi_key_algorithm() -> str:
    """DEBUSINE_SIGNING_UEFI_KEY_ALGORITHM, as `openssl req -newkey` takes it."""
    return str(_setting("DEBUSINE_SIGNING_UEFI_KEY_ALGORITHM"))


def uefi_certificate_days() -> int:
    """DEBUSINE_SIGNING_UEFI_CERTIFICATE_DAYS."""
    return int(_setting("DEBUSINE_SIGNING_UEFI_CERTIFICATE_DAYS"))


def openpgp_key_algorithm() -> str:
    """DEBUSINE_SIGNING_OPENPGP_KEY_ALGORITHM, as `gpg --quick-generate-key` takes it."""
    return str(_setting("DEBUSINE_SIGNING_OPENPGP_KEY_ALGORITHM"))


def openpgp_expiry() -> str:
    """DEBUSINE_SIGNING_OPENPGP_EXPIRY, as gpg takes it."""
    return str(_setting("DEBUSINE_SIGNING_OPENPGP_EXPIRY"))


def pkcs11_module() -> Path:
    """DEBUSINE_SIGNING_PKCS11_MODULE: the HSM's PKCS#11 module."""
    return Path(_setting("DEBUSINE_SIGNING_PKCS11_MODULE"))


def pkcs11_generate_token() -> str:
    """DEBUSINE_SIGNING_PKCS11_GENERATE_TOKEN: the token new X.509 keys are made in, if any."""
    return str(_setting("DEBUSINE_SIGNING_PKCS11_GENERATE_TOKEN"))


def pkcs11_max_sessions() -> int:
    """DEBUSINE_SIGNING_PKCS11_MAX_SESSIONS: concurrent operations per token on this machine."""
    return int(_setting("DEBUSINE_SIGNING_PKCS11_MAX_SESSIONS"))


def pkcs11_session_wait() -> float:
    """DEBUSINE_SIGNING_PKCS11_SESSION_WAIT: seconds to wait for a free token session."""
    return float(_setting("DEBUSINE_SIGNING_PKCS11_SESSION_WAIT"))


def lock_directory() -> Path:
    """DEBUSINE_SIGNING_LOCK_DIRECTORY: lock files of the token session slots."""
    return Path(_setting("DEBUSINE_SIGNING_LOCK_DIRECTORY"))


def trusted_certs() -> list[str]:
    """DEBUSINE_SIGNING_TRUSTED_CERTS: the certificates signed objects may trust."""
    return [str(item) for item in _setting("DEBUSINE_SIGNING_TRUSTED_CERTS")]


def rate_limit_per_minute() -> int:
    """DEBUSINE_SIGNING_RATE_LIMIT_PER_MINUTE: signatures per key per minute; 0: no limit."""
    return int(_setting("DEBUSINE_SIGNING_RATE_LIMIT_PER_MINUTE"))
