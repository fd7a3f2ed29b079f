"""
Making signatures with the tools that check them, Django-free.

UEFI: `sbsign` (attached, or detached PKCS#7), with a software key in a private temporary
file or a PKCS#11 key through openssl's pkcs11 engine. OpenPGP: GnuPG in a throwaway home
(detached `.asc`, or clear-signed). Private material only exists in temporary directories
readable by their owner, removed as soon as the signature is made.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class SigningError(Exception):
    """A signature could not be made; the message says which tool failed and why."""


class SigningMode(StrEnum):
    """How the signature relates to the signed file."""

    ATTACHED = "attached"  # UEFI: the signed binary itself
    DETACHED = "detached"  # UEFI: PKCS#7 signature; OpenPGP: armored `.asc`
    CLEAR = "clear"  # OpenPGP: clear-signed text (InRelease, .dsc, .changes)


@dataclass(frozen=True)
class SoftwareKey:
    """A decrypted private key (bytes) and its public half."""

    private_key: bytes
    public_key: bytes  # UEFI certificate (PEM) or armored OpenPGP public key


@dataclass(frozen=True)
class Pkcs11Key:
    """A key in a PKCS#11 token: its URI (with pin-value or pin-source) and certificate."""

    uri: str
    certificate: bytes
    module: Path  # the PKCS#11 module (e.g. SoftHSM's libsofthsm2.so)


def _run(command: Sequence[str], *, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(list(command), capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise SigningError(f"{command[0]} failed: {reason}")


def _private_file(directory: Path, name: str, content: bytes) -> Path:
    path = directory / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    return path


def sign_uefi(key: SoftwareKey | Pkcs11Key, source: Path, output: Path, mode: SigningMode) -> None:
    """Sign the EFI binary (or kernel image) `source` into `output` with sbsign."""
    if mode not in (SigningMode.ATTACHED, SigningMode.DETACHED):
        raise SigningError(f"uefi signatures are attached or detached, not {mode}")
    with tempfile.TemporaryDirectory(prefix="debusine-signing-") as directory:
        work = Path(directory)
        certificate = _private_file(
            work,
            "certificate.pem",
            key.certificate if isinstance(key, Pkcs11Key) else key.public_key,
        )
        environment: dict[str, str] | None = None
        if isinstance(key, Pkcs11Key):
            key_arguments = ["--engine", "pkcs11", "--key", key.uri]
            environment = {**os.environ, "PKCS11_MODULE_PATH": str(key.module)}
        else:
            key_arguments = ["--key", str(_private_file(work, "key.pem", key.private_key))]
        detached = ["--detached"] if mode == SigningMode.DETACHED else []
        _run(
            [
                "sbsign",
                *key_arguments,
                "--cert",
                str(certificate),
                *detached,
                "--output",
                str(output),
                str(source),
            ],
            env=environment,
        )


def gpg_argv(home: Path, *args: str) -> list[str]:
    return [
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--no-tty",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        *args,
    ]


def sign_openpgp(
    keys: Sequence[tuple[str, SoftwareKey]], source: Path, output: Path, mode: SigningMode
) -> None:
    """
    Sign `source` into `output` with every (fingerprint, key) of `keys`: one signature per
    key, so a Release file can be signed by the old and the new archive key during rollover.
    """
    if mode not in (SigningMode.DETACHED, SigningMode.CLEAR):
        raise SigningError(f"openpgp signatures are detached or clear, not {mode}")
    if not keys:
        raise SigningError("no key to sign with")
    with tempfile.TemporaryDirectory(prefix="debusine-signing-") as directory:
        work = Path(directory)
        home = work / "gnupg"
        home.mkdir(mode=0o700)
        for index, (_fingerprint, key) in enumerate(keys):
            secret = _private_file(work, f"secret-{index}.asc", key.private_key)
            _run(gpg_argv(home, "--import", str(secret)))
        local_users = [
            argument for fingerprint, _ in keys for argument in ("--local-user", f"{fingerprint}!")
        ]
        how = ["--detach-sign", "--armor"] if mode == SigningMode.DETACHED else ["--clearsign"]
        try:
            _run(
                gpg_argv(
                    home,
                    "--digest-algo",
                    "SHA256",
                    *local_users,
                    *how,
                    "--output",
                    str(output),
                    str(source),
                )
            )
        finally:
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                capture_output=True,
                check=False,
            )


def debsign_upload(fingerprint: str, key: SoftwareKey, changes: Path) -> None:
    """
    Sign an upload in place with `debsign`: the .dsc and .buildinfo it lists, then the
    .changes, whose checksums debsign fixes to match the newly signed files. Every file the
    .changes lists must be next to it.
    """
    with tempfile.TemporaryDirectory(prefix="debusine-signing-") as directory:
        work = Path(directory)
        home = work / "gnupg"
        home.mkdir(mode=0o700)
        _run(gpg_argv(home, "--import", str(_private_file(work, "secret.asc", key.private_key))))
        environment = {**os.environ, "GNUPGHOME": str(home)}
        try:
            _run(
                ["debsign", "--no-conf", f"-k{fingerprint}", "--re-sign", str(changes)],
                env=environment,
            )
        finally:
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                capture_output=True,
                check=False,
            )
