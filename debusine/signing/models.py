"""
The signing database: keys (private halves protected, see `service_keys`) and the audit log.

These models live only in the signing database; the server never sees them. The audit log is
append-only in the database itself (triggers in the migrations refuse UPDATE, DELETE and
TRUNCATE) and hash-chained (`audit_chain`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import connection, models, transaction
from django.utils import timezone

from debusine.signing import audit_chain
from debusine.signing.service_keys import (
    PROTECTED_KEY_ADAPTER,
    NaclProtectedKey,
    Pkcs11StaticProtectedKey,
)

# Any number: serializes writers of the audit log so that the chain stays a line.
AUDIT_LOCK_ID = 0x5167_4E41_5544_4954


class KeyPurpose(models.TextChoices):
    """What a key signs, which decides how it is generated and used."""

    UEFI = "uefi", "UEFI Secure Boot (X.509 + sbsign)"
    OPENPGP = "openpgp", "OpenPGP (GnuPG)"
    KMOD = "kmod", "Linux kernel modules (X.509 + sign-file)"

    @property
    def is_x509(self) -> bool:
        """Whether keys of this purpose are an X.509 certificate and its private key."""
        return self != KeyPurpose.OPENPGP


class Key(models.Model):
    """A signing key: its public half, its protected private half, and its lifecycle."""

    purpose = models.CharField(max_length=16, choices=KeyPurpose.choices)
    fingerprint = models.CharField(max_length=64)
    # A `service_keys.ProtectedKey`: sealed private key or PKCS#11 URI; never plaintext.
    private_key = models.JSONField()
    # OpenPGP: the armored public key; UEFI and kmod: the PEM certificate.
    public_key = models.BinaryField()
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # A disabled key refuses new work and stays for the audit log.
    disabled_at = models.DateTimeField(null=True, blank=True)
    # When the key stops being valid (OpenPGP expiry, UEFI certificate notAfter), if ever.
    expires_at = models.DateTimeField(null=True, blank=True)

    # Declared: the type checker's Django plugin knows the server's apps only.
    objects: ClassVar[models.Manager[Key]] = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["purpose", "fingerprint"], name="signing_key_unique_purpose_fingerprint"
            )
        ]

    def __str__(self) -> str:
        return f"{self.purpose}:{self.fingerprint}"

    @property
    def protected(self) -> NaclProtectedKey | Pkcs11StaticProtectedKey:
        """The stored private half, parsed."""
        return PROTECTED_KEY_ADAPTER.validate_python(self.private_key)

    @property
    def storage(self) -> str:
        """Where the private half lives: `nacl` (sealed in this database) or `pkcs11-static`."""
        return self.protected.storage


class AuditEvent(models.TextChoices):
    """What happened to a key."""

    GENERATE = "generate"
    REGISTER = "register"
    SIGN = "sign"
    DEBSIGN = "debsign"
    SIGN_REPOSITORY_INDEX = "signrepositoryindex"
    DISABLE = "disable"
    SET_EXPIRY = "set_expiry"
    GRANT = "grant"
    REVOKE = "revoke"


class KeyGrant(models.Model):
    """
    The signing side's own record of which workspace may use which key.

    Defence in depth: the server checks the signer role before it creates and assigns a
    work request, and the signing worker signs for a workspace only with the keys granted to
    it here, so a compromised server cannot have any key sign for any workspace.
    """

    purpose = models.CharField(max_length=16, choices=KeyPurpose.choices)
    fingerprint = models.CharField(max_length=64)
    workspace = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[models.Manager[KeyGrant]] = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["purpose", "fingerprint", "workspace"],
                name="signing_keygrant_unique_key_workspace",
            )
        ]

    def __str__(self) -> str:
        return f"{self.purpose}:{self.fingerprint} for {self.workspace}"


class AuditLogManager(models.Manager["AuditLog"]):
    """The one way to write the audit log: append a chained row."""

    def append(
        self,
        *,
        purpose: str,
        fingerprint: str,
        event: AuditEvent,
        created_by: str,
        data: dict[str, Any] | None = None,
        created_by_work_request_id: int | None = None,
    ) -> AuditLog:
        """
        Append a row after the last one, in the caller's transaction (or one of its own).

        Writers take a transaction-scoped advisory lock so that two of them never chain to the
        same previous row. A failure raises: callers sign only once this has succeeded.
        """
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_ID])
            last = self.order_by("-id").values_list("row_hash", flat=True).first()
            row = self.model(
                purpose=purpose,
                fingerprint=fingerprint,
                event=event,
                data=data or {},
                created_at=timezone.now(),
                created_by=created_by,
                created_by_work_request_id=created_by_work_request_id,
                previous_hash=last or audit_chain.GENESIS_HASH,
            )
            row.row_hash = audit_chain.row_hash(row.previous_hash, row.chained_content())
            row.save(force_insert=True)
            return row


class AuditLog(models.Model):
    """One use of a key: who, for which work request, which key, on which files."""

    purpose = models.CharField(max_length=16, choices=KeyPurpose.choices)
    fingerprint = models.CharField(max_length=64)
    event = models.CharField(max_length=32, choices=AuditEvent.choices)
    # Details: file names and SHA-256 hashes, key description, PKCS#11 URI...
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    # Who asked: `worker:<name>` for the signing worker, `cli:<user>` for a command.
    created_by = models.CharField(max_length=255)
    created_by_work_request_id = models.BigIntegerField(null=True, blank=True)
    previous_hash = models.CharField(max_length=64)
    row_hash = models.CharField(max_length=64, unique=True)

    objects = AuditLogManager()

    class Meta:
        indexes = [
            models.Index(fields=["purpose", "fingerprint"], name="signing_audit_key_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.purpose}:{self.fingerprint} by {self.created_by}"

    def chained_content(self) -> dict[str, Any]:
        """What the row's hash covers: every field but the id and the hashes."""
        return {
            "purpose": self.purpose,
            "fingerprint": self.fingerprint,
            "event": self.event,
            "data": self.data,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "created_by_work_request_id": self.created_by_work_request_id,
        }

    def as_chained_row(self) -> audit_chain.ChainedRow:
        """This row as `audit_chain.chain_problems` reads it."""
        return audit_chain.ChainedRow(
            id=self.pk,
            previous_hash=self.previous_hash,
            row_hash=self.row_hash,
            content=self.chained_content(),
        )
