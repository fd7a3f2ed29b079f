"""
Storing, registering and retiring keys in the signing database, each with its audit row.

Every change to a key and its audit row happen in one transaction: if the audit row cannot be
written, the key is not stored either (fail closed).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from debusine.signing import config, keys
from debusine.signing.models import AuditEvent, AuditLog, Key, KeyGrant, KeyPurpose
from debusine.signing.pkcs11_keys import (
    Pkcs11Error,
    check_token_holds_key,
    generate_key_in_token,
    self_signed_certificate,
    token_session_slot,
)
from debusine.signing.service_keys import (
    NaclProtectedKey,
    Pkcs11StaticProtectedKey,
    ServiceKey,
    load_service_keys,
    seal,
    unseal,
)


class KeyStoreError(Exception):
    """A key operation was refused; one-line message."""


def configured_service_keys() -> list[ServiceKey]:
    """The service keys of DEBUSINE_SIGNING_SERVICE_KEYS (ServiceKeyError when unusable)."""
    return load_service_keys(config.service_key_paths())


@contextlib.contextmanager
def token_slot(pkcs11_uri: str) -> Iterator[None]:
    """Hold one of the token's session slots (DEBUSINE_SIGNING_PKCS11_MAX_SESSIONS)."""
    try:
        with token_session_slot(
            pkcs11_uri,
            max_sessions=config.pkcs11_max_sessions(),
            lock_directory=config.lock_directory(),
            wait_seconds=config.pkcs11_session_wait(),
        ):
            yield
    except Pkcs11Error as exc:
        raise KeyStoreError(str(exc)) from exc


def generate_key(
    purpose: KeyPurpose,
    description: str,
    *,
    created_by: str,
    service_keys: Sequence[ServiceKey],
    work_request_id: int | None = None,
    pkcs11_token: str | None = None,
) -> Key:
    """
    Generate a key of `purpose` and audit it: an X.509 key inside the PKCS#11 token
    `pkcs11_token` (default: DEBUSINE_SIGNING_PKCS11_GENERATE_TOKEN) when one is given, else
    a software key stored sealed.
    """
    token = config.pkcs11_generate_token() if pkcs11_token is None else pkcs11_token
    if token and purpose.is_x509:
        return generate_key_in_hsm(
            purpose, description, token, created_by=created_by, work_request_id=work_request_id
        )
    if purpose == KeyPurpose.OPENPGP:
        generated = keys.generate_openpgp_key(
            description,
            algorithm=config.openpgp_key_algorithm(),
            expiry=config.openpgp_expiry(),
        )
    else:
        generated = keys.generate_uefi_key(
            description,
            algorithm=config.uefi_key_algorithm(),
            days=config.uefi_certificate_days(),
        )
    protected = seal(generated.private_key, service_keys)
    with transaction.atomic():
        key = Key.objects.create(
            purpose=purpose,
            fingerprint=generated.fingerprint,
            private_key=protected.model_dump(),
            public_key=generated.public_key,
            description=description,
            expires_at=generated.expires_at,
        )
        AuditLog.objects.append(
            purpose=purpose,
            fingerprint=key.fingerprint,
            event=AuditEvent.GENERATE,
            created_by=created_by,
            created_by_work_request_id=work_request_id,
            data={
                "description": description,
                "storage": protected.storage,
                "public_key_sha256": hashlib.sha256(generated.public_key).hexdigest(),
            },
        )
    return key


def generate_key_in_hsm(
    purpose: KeyPurpose,
    description: str,
    token_uri: str,
    *,
    created_by: str,
    work_request_id: int | None = None,
) -> Key:
    """
    Generate an X.509 key inside the token of `token_uri`: the private key never leaves it,
    the certificate is self-signed by it, and the key is stored as `pkcs11-static`.
    """
    module = config.pkcs11_module()
    label = f"debusine-{purpose}-{uuid.uuid4().hex[:12]}"
    try:
        with token_slot(token_uri):
            _label, key_uri = generate_key_in_token(
                token_uri, module, label=label, algorithm=config.uefi_key_algorithm()
            )
            certificate = self_signed_certificate(
                key_uri, module, common_name=description, days=config.uefi_certificate_days()
            )
    except Pkcs11Error as exc:
        raise KeyStoreError(str(exc)) from exc
    with tempfile.TemporaryDirectory(prefix="debusine-signing-") as directory:
        path = Path(directory) / "certificate.pem"
        path.write_bytes(certificate)
        try:
            fingerprint, expires_at = keys.certificate_fingerprint_and_expiry(path)
        except keys.KeyGenerationError as exc:
            raise KeyStoreError(f"the token's certificate does not read: {exc}") from exc
    with transaction.atomic():
        key = Key.objects.create(
            purpose=purpose,
            fingerprint=fingerprint,
            private_key=Pkcs11StaticProtectedKey(pkcs11_uri=str(key_uri)).model_dump(),
            public_key=certificate,
            description=description,
            expires_at=expires_at,
        )
        AuditLog.objects.append(
            purpose=purpose,
            fingerprint=fingerprint,
            event=AuditEvent.GENERATE,
            created_by=created_by,
            created_by_work_request_id=work_request_id,
            data={
                "description": description,
                "storage": "pkcs11-static",
                "generated_in_token": True,
                "pkcs11_uri": str(key_uri),
                "public_key_sha256": hashlib.sha256(certificate).hexdigest(),
            },
        )
    return key


def register_pkcs11_static_key(
    purpose: KeyPurpose, pkcs11_uri: str, certificate: Path, description: str, *, created_by: str
) -> Key:
    """Record a key held by a PKCS#11 token: its URI and its certificate (uefi, kmod)."""
    if not purpose.is_x509:
        raise KeyStoreError(f"{purpose} keys cannot be registered from a PKCS#11 token")
    try:
        fingerprint, expires_at = keys.certificate_fingerprint_and_expiry(certificate)
    except keys.KeyGenerationError as exc:
        raise KeyStoreError(f"cannot read certificate {certificate}: {exc}") from exc
    public_key = certificate.read_bytes()
    try:
        with token_slot(pkcs11_uri):
            check_token_holds_key(pkcs11_uri, config.pkcs11_module(), public_key)
    except Pkcs11Error as exc:
        raise KeyStoreError(str(exc)) from exc
    with transaction.atomic():
        if Key.objects.filter(purpose=purpose, fingerprint=fingerprint).exists():
            raise KeyStoreError(f"a {purpose} key with fingerprint {fingerprint} already exists")
        key = Key.objects.create(
            purpose=purpose,
            fingerprint=fingerprint,
            private_key=Pkcs11StaticProtectedKey(pkcs11_uri=pkcs11_uri).model_dump(),
            public_key=public_key,
            description=description,
            expires_at=expires_at,
        )
        AuditLog.objects.append(
            purpose=purpose,
            fingerprint=fingerprint,
            event=AuditEvent.REGISTER,
            created_by=created_by,
            data={
                "description": description,
                "pkcs11_uri": pkcs11_uri,
                "certificate_sha256": hashlib.sha256(public_key).hexdigest(),
            },
        )
    return key


def disable_key(purpose: KeyPurpose, fingerprint: str, *, created_by: str) -> Key:
    """Refuse the key for new work from now on; it stays for the audit log."""
    with transaction.atomic():
        key = find_key(purpose, fingerprint, for_update=True)
        if key.disabled_at is None:
            key.disabled_at = timezone.now()
            key.save(update_fields=["disabled_at", "updated_at"])
            AuditLog.objects.append(
                purpose=purpose,
                fingerprint=fingerprint,
                event=AuditEvent.DISABLE,
                created_by=created_by,
            )
    return key


def grant_key(purpose: KeyPurpose, fingerprint: str, workspace: str, *, created_by: str) -> bool:
    """Let `workspace` use the key on this signing side; False if it already could."""
    with transaction.atomic():
        find_key(purpose, fingerprint)
        _grant, created = KeyGrant.objects.get_or_create(
            purpose=purpose, fingerprint=fingerprint, workspace=workspace
        )
        if created:
            AuditLog.objects.append(
                purpose=purpose,
                fingerprint=fingerprint,
                event=AuditEvent.GRANT,
                created_by=created_by,
                data={"workspace": workspace},
            )
    return created


def revoke_key(purpose: KeyPurpose, fingerprint: str, workspace: str, *, created_by: str) -> None:
    """Stop `workspace` using the key on this signing side."""
    with transaction.atomic():
        deleted, _ = KeyGrant.objects.filter(
            purpose=purpose, fingerprint=fingerprint, workspace=workspace
        ).delete()
        if not deleted:
            raise KeyStoreError(
                f"workspace {workspace} has no grant on {purpose} key {fingerprint}"
            )
        AuditLog.objects.append(
            purpose=purpose,
            fingerprint=fingerprint,
            event=AuditEvent.REVOKE,
            created_by=created_by,
            data={"workspace": workspace},
        )


def check_granted(purpose: KeyPurpose, fingerprints: Sequence[str], workspace: str) -> None:
    """Refuse unless every key is granted to `workspace` here (whatever the server said)."""
    granted = set(
        KeyGrant.objects.filter(
            purpose=purpose, fingerprint__in=fingerprints, workspace=workspace
        ).values_list("fingerprint", flat=True)
    )
    for fingerprint in fingerprints:
        if fingerprint not in granted:
            raise KeyStoreError(
                f"workspace {workspace} has no grant on {purpose} key {fingerprint} on this"
                f" signing worker (debusine-signing grant add {purpose} {fingerprint} {workspace})"
            )


def find_key(purpose: KeyPurpose, fingerprint: str, *, for_update: bool = False) -> Key:
    """The key `purpose:fingerprint`, or KeyStoreError."""
    queryset = Key.objects.select_for_update() if for_update else Key.objects.all()
    try:
        return queryset.get(purpose=purpose, fingerprint=fingerprint)
    except Key.DoesNotExist as exc:
        raise KeyStoreError(f"no {purpose} key with fingerprint {fingerprint}") from exc


def public_key_b64(key: Key) -> str:
    """The public key as the server's `debusine:signing-key` asset stores it."""
    return base64.b64encode(bytes(key.public_key)).decode()


def set_openpgp_expiry(
    fingerprint: str, expiry: str, *, created_by: str, service_keys: Sequence[ServiceKey]
) -> Key:
    """Set or extend an OpenPGP key's expiry: new self-signature, resealed, audited."""
    with transaction.atomic():
        key = find_key(KeyPurpose.OPENPGP, fingerprint, for_update=True)
        protected = key.protected
        if not isinstance(protected, NaclProtectedKey):
            raise KeyStoreError("only software OpenPGP keys can have their expiry changed here")
        try:
            changed = keys.set_openpgp_expiry(unseal(protected, service_keys), fingerprint, expiry)
        except keys.KeyGenerationError as exc:
            raise KeyStoreError(str(exc)) from exc
        key.private_key = seal(changed.private_key, service_keys).model_dump()
        key.public_key = changed.public_key
        key.expires_at = changed.expires_at
        key.save(update_fields=["private_key", "public_key", "expires_at", "updated_at"])
        AuditLog.objects.append(
            purpose=KeyPurpose.OPENPGP,
            fingerprint=fingerprint,
            event=AuditEvent.SET_EXPIRY,
            created_by=created_by,
            data={
                "expiry": expiry,
                "expires_at": changed.expires_at.isoformat() if changed.expires_at else None,
                "public_key_sha256": hashlib.sha256(changed.public_key).hexdigest(),
            },
        )
    return key
