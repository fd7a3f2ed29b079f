"""
Keys held in a PKCS#11 token (an HSM; SoftHSM2 in tests), through python-pkcs11.

A `pkcs11-static` key is named by an RFC 7512 URI such as
`pkcs11:token=signing;object=uefi-2026;type=private?pin-source=file:/etc/debusine/signing/pin`.
The PIN comes from the `pin-source` file, which must be readable by its owner only (like the
service keys). Registering a key checks that the token holds it and that it is the key of the
certificate given, so that a typo never registers a key that cannot sign.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pkcs11
from pkcs11 import Attribute, ObjectClass


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
