"""
Checks a signing worker makes on its inputs before any key is used, Django-free.

Trusted certificates guard: a `debusine:signing-input` may declare, in `trusted_certs`, the
SHA-256 fingerprints of certificates the signed object will trust (e.g. the certificates
built into a shim or a kernel's keyring). A production key must never sign an object that
trusts a test certificate, so every one of them must be in the worker's allow-list
(DEBUSINE_SIGNING_TRUSTED_CERTS).
"""

from __future__ import annotations

from collections.abc import Iterable


class PolicyError(Exception):
    """The input may not be signed here; one-line message."""


def normalise_fingerprint(fingerprint: str) -> str:
    """`AB:CD...`, `abcd...` -> `ABCD...`."""
    return fingerprint.replace(":", "").strip().upper()


def check_trusted_certs(trusted_certs: Iterable[str], allowed: Iterable[str]) -> None:
    """Refuse an input trusting a certificate outside the allow-list."""
    allowed_set = {normalise_fingerprint(item) for item in allowed}
    outside = sorted({normalise_fingerprint(item) for item in trusted_certs} - allowed_set)
    if outside:
        raise PolicyError(
            "the input trusts certificates outside DEBUSINE_SIGNING_TRUSTED_CERTS: "
            + ", ".join(outside)
        )
