"""
Service keys and the "protected" form of private keys stored in the signing database.

A software private key never reaches the database in plaintext: it is sealed (libsodium
SealedBox, through PyNaCl) to the public half of a service key, a Curve25519 key pair kept in a
file on the signing worker. The protected form records which service key sealed it, so that
several service keys can be configured at once: the first seals new keys, all of them open old
ones (rotation). A key held in an HSM is stored as its PKCS#11 URI only.

Django-free: the worker, the commands and the tests use it alike.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import nacl.exceptions
import nacl.public
import pydantic


class ServiceKeyError(Exception):
    """A service key file is missing, unreadable, malformed or not private; one-line message."""


class ServiceKey:
    """One service key: its file and its Curve25519 key pair."""

    def __init__(self, path: Path, private_key: nacl.public.PrivateKey) -> None:
        self.path = path
        self.private_key = private_key

    @property
    def public_key_b64(self) -> str:
        """The public half, base64: what a protected key records."""
        return base64.b64encode(bytes(self.private_key.public_key)).decode()


def generate_service_key(path: Path) -> ServiceKey:
    """Create `path` (it must not exist) holding a new service key, readable by its owner only."""
    private_key = nacl.public.PrivateKey.generate()
    encoded = base64.b64encode(bytes(private_key)) + b"\n"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ServiceKeyError(
            f"{path} already exists; refusing to overwrite a service key"
        ) from exc
    except OSError as exc:
        raise ServiceKeyError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(encoded)
    return ServiceKey(path, private_key)


def load_service_key(path: Path) -> ServiceKey:
    """Read one service key file, refusing it when group or others may access it."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            content = handle.read()
    except OSError as exc:
        raise ServiceKeyError(f"cannot read service key {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServiceKeyError(
            f"service key {path} is accessible by group or others"
            f" (mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}"
        )
    try:
        raw = base64.b64decode(content.strip(), validate=True)
        private_key = nacl.public.PrivateKey(raw)
    except (ValueError, nacl.exceptions.CryptoError) as exc:
        raise ServiceKeyError(f"service key {path} is not a base64 Curve25519 key") from exc
    return ServiceKey(path, private_key)


def load_service_keys(paths: Sequence[Path]) -> list[ServiceKey]:
    """Read every configured service key; the first one seals new keys."""
    if not paths:
        raise ServiceKeyError("no service key configured (DEBUSINE_SIGNING_SERVICE_KEYS)")
    return [load_service_key(Path(path)) for path in paths]


class NaclProtectedKey(pydantic.BaseModel):
    """A software private key sealed to a service key."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    storage: Literal["nacl"] = "nacl"
    public_key: str  # base64 public half of the service key that sealed it
    encrypted: str  # base64 SealedBox ciphertext


class Pkcs11StaticProtectedKey(pydantic.BaseModel):
    """A private key held by a PKCS#11 token (an HSM), named by its URI; never exported."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    storage: Literal["pkcs11-static"] = "pkcs11-static"
    pkcs11_uri: str


ProtectedKey = Annotated[
    NaclProtectedKey | Pkcs11StaticProtectedKey, pydantic.Field(discriminator="storage")
]
PROTECTED_KEY_ADAPTER: pydantic.TypeAdapter[NaclProtectedKey | Pkcs11StaticProtectedKey] = (
    pydantic.TypeAdapter(ProtectedKey)
)


def seal(private_key: bytes, service_keys: Sequence[ServiceKey]) -> NaclProtectedKey:
    """Seal `private_key` to the first service key."""
    sealing = service_keys[0]
    box = nacl.public.SealedBox(sealing.private_key.public_key)
    return NaclProtectedKey(
        public_key=sealing.public_key_b64,
        encrypted=base64.b64encode(box.encrypt(private_key)).decode(),
    )


def unseal(protected: NaclProtectedKey, service_keys: Sequence[ServiceKey]) -> bytes:
    """Open a sealed private key with whichever configured service key sealed it."""
    for service_key in service_keys:
        if service_key.public_key_b64 == protected.public_key:
            box = nacl.public.SealedBox(service_key.private_key)
            try:
                return box.decrypt(base64.b64decode(protected.encrypted))
            except nacl.exceptions.CryptoError as exc:
                raise ServiceKeyError(
                    f"the key sealed to {service_key.path} does not open: corrupt ciphertext"
                ) from exc
    raise ServiceKeyError(
        f"no configured service key has public key {protected.public_key}:"
        " add the service key that sealed this key to DEBUSINE_SIGNING_SERVICE_KEYS"
    )
