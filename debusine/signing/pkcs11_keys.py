"""
Keys held in a PKCS#11 token (an HSM; SoftHSM2 in tests), through python-pkcs11.

A `pkcs11-static` key is named by an RFC 7512 URI such as
`pkcs11:token=signing;object=uefi-2026;type=private?pin-source=file:/etc/debusine/signing/pin`.
The PIN comes from the `pin-source` file, which must be readable by its owner only (like the
service keys). Registering a key checks that the token holds it and that it is the key of the
certificate given, so that a typo never registers a key that cannot sign.

Keys can also be generated inside the token (`generate_key_in_token`): the private half is
created sensitive and non-extractable, so it never leaves the HSM, and the certificate is
self-signed by the token through openssl's pkcs11 engine.

An HSM serves a limited number of sessions: `token_session_slot` caps how many signing
operations of this machine use one token at once (file locks, so that every signing process
of the machine counts), and waits a while for a free slot before refusing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass


class Pkcs11Error(Exception):
    """The token, the key or its PIN cannot be used; one-line message."""


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of a PKCS#11 URI that find a key: path attributes and query attributes."""

    path: dict[str, str]
    query: dict[str, str]

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        if not uri.startswith("pkcs11:"):
            raise Pkcs11Error(f"not a PKCS#11 URI: {uri!r}")
        body = uri[len("pkcs11:") :]
        path_part, _, query_part = body.partition("?")

        def attributes(text: str, separator: str) -> dict[str, str]:
            result: dict[str, str] = {}
            for item in filter(None, text.split(separator)):
                name, equals, value = item.partition("=")
                if not equals:
                    raise Pkcs11Error(f"PKCS#11 URI attribute without a value: {item!r}")
                result[name] = unquote(value)
            return result

        return cls(attributes(path_part, ";"), attributes(query_part, "&"))

    def __str__(self) -> str:
        def attributes(values: dict[str, str], separator: str) -> str:
            return separator.join(
                f"{name}={quote(value, safe=':/')}" for name, value in values.items()
            )

        text = "pkcs11:" + attributes(self.path, ";")
        return text + ("?" + attributes(self.query, "&") if self.query else "")

    @property
    def token_label(self) -> str:
        try:
            return self.path["token"]
        except KeyError:
            raise Pkcs11Error("the PKCS#11 URI names no token (token=...)") from None

    @property
    def object_label(self) -> str:
        try:
            return self.path["object"]
        except KeyError:
            raise Pkcs11Error("the PKCS#11 URI names no object (object=...)") from None


def read_pin(uri: Pkcs11Uri) -> str:
    """The token PIN: from the `pin-source` file (owner-only), else `pin-value`."""
    source = uri.query.get("pin-source")
    if source is None:
        if "pin-value" in uri.query:
            return uri.query["pin-value"]
        raise Pkcs11Error("the PKCS#11 URI gives no PIN (add ?pin-source=file:/path/to/pin)")
    path = Path(source.removeprefix("file:"))
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            content = handle.read()
    except OSError as exc:
        raise Pkcs11Error(f"cannot read PIN file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise Pkcs11Error(
            f"PIN file {path} is accessible by group or others"
            f" (mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}"
        )
    return content.decode().strip()


def certificate_modulus(certificate: bytes) -> int:
    """The RSA modulus of a PEM certificate."""
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-modulus"],
        input=certificate,
        capture_output=True,
        check=False,
    )
    text = result.stdout.decode().strip()
    if result.returncode != 0 or not text.startswith("Modulus="):
        raise Pkcs11Error("the certificate holds no RSA public key")
    return int(text.removeprefix("Modulus="), 16)


def check_token_holds_key(uri_text: str, module: Path, certificate: bytes) -> None:
    """Log in to the token and check it holds the private key of `certificate`."""
    uri = Pkcs11Uri.parse(uri_text)
    pin = read_pin(uri)
    try:
        library = pkcs11.lib(str(module))
        token = library.get_token(token_label=uri.token_label)
        with token.open(user_pin=pin) as session:
            key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=uri.object_label)
            modulus = int.from_bytes(key[Attribute.MODULUS], "big")
    except pkcs11.exceptions.NoSuchToken:
        raise Pkcs11Error(f"no PKCS#11 token labelled {uri.token_label!r}") from None
    except pkcs11.exceptions.NoSuchKey:
        raise Pkcs11Error(
            f"token {uri.token_label!r} has no private key labelled {uri.object_label!r}"
        ) from None
    except pkcs11.exceptions.PinIncorrect:
        raise Pkcs11Error(f"wrong PIN for token {uri.token_label!r}") from None
    except pkcs11.exceptions.PKCS11Error as exc:
        raise Pkcs11Error(f"PKCS#11 error: {type(exc).__name__}") from None
    except RuntimeError as exc:  # the module cannot be loaded
        raise Pkcs11Error(f"cannot load PKCS#11 module {module}: {exc}") from None
    if modulus != certificate_modulus(certificate):
        raise Pkcs11Error(
            f"the key {uri.object_label!r} in token {uri.token_label!r} is not the"
            " certificate's key"
        )


def _open_token(uri: Pkcs11Uri, module: Path) -> pkcs11.Token:
    try:
        return pkcs11.lib(str(module)).get_token(token_label=uri.token_label)
    except pkcs11.exceptions.NoSuchToken:
        raise Pkcs11Error(f"no PKCS#11 token labelled {uri.token_label!r}") from None
    except RuntimeError as exc:  # the module cannot be loaded
        raise Pkcs11Error(f"cannot load PKCS#11 module {module}: {exc}") from None


def rsa_bits(algorithm: str) -> int:
    """The key size of an openssl `-newkey` algorithm (`rsa:3072`); tokens generate RSA only."""
    kind, _, bits = algorithm.partition(":")
    if kind != "rsa" or not bits.isdigit():
        raise Pkcs11Error(f"keys generated in a PKCS#11 token are RSA (rsa:BITS), not {algorithm}")
    return int(bits)


def generate_key_in_token(
    token_uri: str, module: Path, *, label: str, algorithm: str
) -> tuple[str, Pkcs11Uri]:
    """
    Generate an RSA key pair inside the token of `token_uri` (`pkcs11:token=...` with a PIN
    source). The private key is sensitive and never extractable. Return its label and URI.
    """
    uri = Pkcs11Uri.parse(token_uri)
    pin = read_pin(uri)
    token = _open_token(uri, module)
    try:
        with token.open(user_pin=pin, rw=True) as session:
            session.generate_keypair(
                KeyType.RSA,
                rsa_bits(algorithm),
                id=secrets.token_bytes(8),
                label=label,
                store=True,
                public_template={Attribute.VERIFY: True, Attribute.ENCRYPT: False},
                private_template={
                    Attribute.SIGN: True,
                    Attribute.DECRYPT: False,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True,
                },
            )
    except pkcs11.exceptions.PinIncorrect:
        raise Pkcs11Error(f"wrong PIN for token {uri.token_label!r}") from None
    except pkcs11.exceptions.PKCS11Error as exc:
        raise Pkcs11Error(f"PKCS#11 error generating a key: {type(exc).__name__}") from None
    key_path = {"token": uri.token_label, "object": label, "type": "private"}
    return label, Pkcs11Uri(key_path, dict(uri.query))


def self_signed_certificate(
    key_uri: Pkcs11Uri, module: Path, *, common_name: str, days: int
) -> bytes:
    """A self-signed X.509 certificate (PEM) of the token's key, signed inside the token."""
    with tempfile.TemporaryDirectory(prefix="debusine-signing-") as directory:
        output = Path(directory) / "certificate.pem"
        result = subprocess.run(
            [
                "openssl", "req", "-new", "-x509", "-engine", "pkcs11", "-keyform", "engine",
                "-key", str(key_uri), "-subj", f"/CN={common_name.replace('/', ' ')}/",
                "-days", str(days), "-sha256", "-out", str(output),
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PKCS11_MODULE_PATH": str(module)},
        )  # fmt: skip
        if result.returncode != 0 or not output.exists():
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit status {result.returncode}"
            raise Pkcs11Error(f"openssl could not certify the token's key: {reason}")
        return output.read_bytes()


def key_is_sealed_in_token(uri_text: str, module: Path) -> bool:
    """Whether the token's private key is sensitive and was never extractable."""
    uri = Pkcs11Uri.parse(uri_text)
    token = _open_token(uri, module)
    with token.open(user_pin=read_pin(uri)) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=uri.object_label)
        return bool(
            key[Attribute.SENSITIVE]
            and not key[Attribute.EXTRACTABLE]
            and key[Attribute.NEVER_EXTRACTABLE]
        )


@contextlib.contextmanager
def token_session_slot(
    uri_text: str, *, max_sessions: int, lock_directory: Path, wait_seconds: float
) -> Iterator[None]:
    """
    Hold one of the `max_sessions` slots of the URI's token while the block runs (a file
    lock in `lock_directory` per slot, released even if the process dies). Wait up to
    `wait_seconds` for a free slot, then refuse.
    """
    label = Pkcs11Uri.parse(uri_text).token_label
    lock_directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = quote(label, safe="")
    deadline = time.monotonic() + wait_seconds
    while True:
        for slot in range(max_sessions):
            descriptor = os.open(
                lock_directory / f"{name}.{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600
            )
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            try:
                yield
            finally:
                os.close(descriptor)  # releases the lock
            return
        if time.monotonic() >= deadline:
            raise Pkcs11Error(
                f"all {max_sessions} sessions of PKCS#11 token {label!r} are in use"
                " (DEBUSINE_SIGNING_PKCS11_MAX_SESSIONS): try again later"
            )
        time.sleep(0.05)
