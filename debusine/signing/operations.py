"""
Signing with stored keys: refuse unusable keys, sign, audit, and only then release the result.

The audit row is written before the signature leaves: the signature is made into a temporary
file next to the requested output, and moved into place only once its audit row (input and
output SHA-256, key, caller, work request) has been committed. If the audit log cannot be
written, nothing is signed as far as anyone can see (fail closed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from debusine.signing import config
from debusine.signing.key_store import KeyStoreError, token_slot
from debusine.signing.models import AuditEvent, AuditLog, Key, KeyPurpose
from debusine.signing.pkcs11_keys import Pkcs11Error, Pkcs11Uri, read_pin
from debusine.signing.service_keys import NaclProtectedKey, ServiceKey, unseal
from debusine.signing.signers import (
    Pkcs11Key,
    SigningError,
    SigningMode,
    SoftwareKey,
    debsign_upload,
    sign_kernel_module,
    sign_openpgp,
    sign_uefi,
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def usable_key(purpose: KeyPurpose, fingerprint: str) -> Key:
    """The key, if it may sign new work: it exists, is not disabled and has not expired."""
    try:
        key = Key.objects.get(purpose=purpose, fingerprint=fingerprint)
    except Key.DoesNotExist as exc:
        raise KeyStoreError(f"no {purpose} key with fingerprint {fingerprint}") from exc
    if key.disabled_at is not None:
        raise KeyStoreError(
            f"{purpose} key {fingerprint} is disabled since {key.disabled_at:%Y-%m-%d}:"
            " it signs nothing new"
        )
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise KeyStoreError(
            f"{purpose} key {fingerprint} expired on {key.expires_at:%Y-%m-%d}:"
            " extend its expiry or use another key"
        )
    return key


SIGNING_EVENTS = (AuditEvent.SIGN, AuditEvent.DEBSIGN, AuditEvent.SIGN_REPOSITORY_INDEX)


def check_rate_limit(key: Key) -> None:
    """Refuse when the key already made its allowed signatures in the last minute."""
    limit = config.rate_limit_per_minute()
    if limit <= 0:
        return
    recent = AuditLog.objects.filter(
        purpose=key.purpose,
        fingerprint=key.fingerprint,
        event__in=SIGNING_EVENTS,
        created_at__gt=timezone.now() - dt.timedelta(minutes=1),
    ).count()
    if recent >= limit:
        raise KeyStoreError(
            f"{key.purpose} key {key.fingerprint} made {recent} signatures in the last minute"
            f" (limit {limit}, DEBUSINE_SIGNING_RATE_LIMIT_PER_MINUTE): try again later"
        )


def usable_material(key: Key, service_keys: Sequence[ServiceKey]) -> SoftwareKey | Pkcs11Key:
    """What the signing tools need for `key`: decrypted software key, or PKCS#11 reference."""
    protected = key.protected
    if isinstance(protected, NaclProtectedKey):
        return SoftwareKey(unseal(protected, service_keys), bytes(key.public_key))
    try:
        # Refuses a PIN file others can read before the token is ever opened.
        read_pin(Pkcs11Uri.parse(protected.pkcs11_uri))
    except Pkcs11Error as exc:
        raise KeyStoreError(str(exc)) from exc
    return Pkcs11Key(protected.pkcs11_uri, bytes(key.public_key), config.pkcs11_module())


def sign_file(
    purpose: KeyPurpose,
    fingerprints: Sequence[str],
    source: Path,
    output: Path,
    mode: SigningMode,
    *,
    created_by: str,
    service_keys: Sequence[ServiceKey],
    work_request_id: int | None = None,
    event: AuditEvent = AuditEvent.SIGN,
) -> list[AuditLog]:
    """Sign `source` into `output`; return the audit rows (one per key)."""
    if not fingerprints:
        raise KeyStoreError("no key given")
    if purpose.is_x509 and len(fingerprints) != 1:
        raise KeyStoreError(f"a {purpose} signature is made with exactly one key")
    keys = [usable_key(purpose, fingerprint) for fingerprint in fingerprints]
    for key in keys:
        check_rate_limit(key)
    partial = output.with_name(f".{output.name}.partial")
    try:
        if purpose.is_x509:
            material = usable_material(keys[0], service_keys)
            with (
                token_slot(material.uri)
                if isinstance(material, Pkcs11Key)
                else contextlib.nullcontext()
            ):
                if purpose == KeyPurpose.UEFI:
                    sign_uefi(material, source, partial, mode)
                else:
                    sign_kernel_module(material, source, partial, mode)
        else:
            materials: list[tuple[str, SoftwareKey]] = []
            for key in keys:
                material = usable_material(key, service_keys)
                if not isinstance(material, SoftwareKey):
                    raise SigningError(
                        "openpgp keys in a PKCS#11 token are not supported"
                        " (see docs/reference/signing.md)"
                    )
                materials.append((key.fingerprint, material))
            sign_openpgp(materials, source, partial, mode)
        details = {
            "mode": mode.value,
            "file": source.name,
            "input_sha256": file_sha256(source),
            "output_sha256": file_sha256(partial),
            "storage": keys[0].storage,
        }
        with transaction.atomic():
            rows = [
                AuditLog.objects.append(
                    purpose=purpose,
                    fingerprint=key.fingerprint,
                    event=event,
                    created_by=created_by,
                    created_by_work_request_id=work_request_id,
                    data={**details, "storage": key.storage},
                )
                for key in keys
            ]
        partial.replace(output)
        return rows
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def debsign_changes(
    fingerprint: str,
    changes: Path,
    *,
    created_by: str,
    service_keys: Sequence[ServiceKey],
    work_request_id: int | None = None,
) -> AuditLog:
    """
    Sign an upload (its .changes, .dsc and .buildinfo, next to each other) with an OpenPGP
    key, in a copy: the originals are replaced only once the audit row is committed.
    """
    key = usable_key(KeyPurpose.OPENPGP, fingerprint)
    check_rate_limit(key)
    material = usable_material(key, service_keys)
    if not isinstance(material, SoftwareKey):
        raise SigningError(
            "openpgp keys in a PKCS#11 token are not supported (see docs/reference/signing.md)"
        )
    directory = changes.parent
    staging = directory / ".debsign"
    staging.mkdir()
    try:
        signed_suffixes = (".changes", ".dsc", ".buildinfo")
        for path in directory.iterdir():
            if path.is_file():
                (staging / path.name).symlink_to(path)
        for path in staging.iterdir():
            if path.name.endswith(signed_suffixes):
                # debsign rewrites these: real copies, the originals stay untouched for now.
                target = path.resolve()
                path.unlink()
                path.write_bytes(target.read_bytes())
        before = {
            path.name: file_sha256(path)
            for path in directory.iterdir()
            if path.name.endswith(signed_suffixes)
        }
        debsign_upload(key.fingerprint, material, staging / changes.name)
        after = {name: file_sha256(staging / name) for name in before}
        with transaction.atomic():
            row = AuditLog.objects.append(
                purpose=KeyPurpose.OPENPGP,
                fingerprint=key.fingerprint,
                event=AuditEvent.DEBSIGN,
                created_by=created_by,
                created_by_work_request_id=work_request_id,
                data={
                    "changes": changes.name,
                    "input_sha256": before,
                    "output_sha256": after,
                    "storage": key.storage,
                },
            )
        for name in before:
            (staging / name).replace(directory / name)
        return row
    finally:
        shutil.rmtree(staging, ignore_errors=True)
