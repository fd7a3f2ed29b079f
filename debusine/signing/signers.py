"""
Making signatures with the tools that check them, Django-free.

UEFI: `sbsign` (attached, or detached PKCS#7), with a software key in a private temporary
file or a PKCS#11 key through openssl's pkcs11 engine. Kernel modules: what the kernel's
`sign-file` makes (a PKCS#7 signature appended to the module, or a detached `.p7s`), made by
`openssl cms`, with the same two kinds of keys. OpenPGP: GnuPG in a throwaway home
(detached `.asc`, or clear-signed). Private material only exists in temporary directories
readable by their owner, removed as soon as the signature is made.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class SigningError(Exception):
    """A signature could not be made; the message says which tool failed and why."""


class SigningMode(StrEnum):
    """How the signature relates to the signed file."""

    ATTACHED = "attached"  # UEFI, kmod: the signed binary itself
    DETACHED = "detached"  # UEFI, kmod: PKCS#7 signature; OpenPGP: armored `.asc`
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


#: The hash algorithm of kernel module signatures (the kernel's default, CONFIG_MODULE_SIG_SHA256).
KERNEL_MODULE_HASH = "sha256"
#: What ends a signed kernel module (the kernel's MODULE_SIG_STRING).
MODULE_SIGNATURE_MAGIC = b"~Module signature appended~\n"
#: `struct module_signature` before the magic: algo, hash, id_type (2: PKCS#7), signer_len,
#: key_id_len, 3 bytes of padding, then the signature's length (big-endian 32 bits).
PKCS7_ID_TYPE = 2


def module_signature_trailer(signature_length: int) -> bytes:
    """What follows the PKCS#7 signature appended to a kernel module."""
    info = bytes([0, 0, PKCS7_ID_TYPE, 0, 0, 0, 0, 0]) + signature_length.to_bytes(4, "big")
    return info + MODULE_SIGNATURE_MAGIC


def sign_kernel_module(
    key: SoftwareKey | Pkcs11Key, source: Path, output: Path, mode: SigningMode
) -> None:
    """
    Sign the kernel module `source` into `output` as the kernel's `sign-file` does: a
    detached PKCS#7 (CMS) signature over the module, without signed attributes or
    certificates, issuer and serial naming the signer. Attached, the module followed by the
    signature and its trailer (what `modprobe` loads and the kernel checks); detached, the
    signature alone (DER).

    openssl makes the signature, with the key in a file or in a token (its pkcs11 engine):
    Debian 12's sign-file only reaches PKCS#11 keys through an OpenSSL provider Debian 12
    does not ship.
    """
    if mode not in (SigningMode.ATTACHED, SigningMode.DETACHED):
        raise SigningError(f"kernel module signatures are attached or detached, not {mode}")
    with tempfile.TemporaryDirectory(prefix="debusine-signing-") as directory:
        work = Path(directory)
        certificate = _private_file(
            work,
            "certificate.pem",
            key.certificate if isinstance(key, Pkcs11Key) else key.public_key,
        )
        environment: dict[str, str] | None = None
        if isinstance(key, Pkcs11Key):
            key_arguments = ["-engine", "pkcs11", "-keyform", "engine", "-inkey", key.uri]
            environment = {**os.environ, "PKCS11_MODULE_PATH": str(key.module)}
        else:
            key_arguments = ["-inkey", str(_private_file(work, "key.pem", key.private_key))]
        signature = work / "module.p7s"
        _run(
            [
                "openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-nosmimecap",
                "-md", KERNEL_MODULE_HASH, "-signer", str(certificate), *key_arguments,
                "-outform", "DER", "-in", str(source), "-out", str(signature),
            ],
            env=environment,
        )  # fmt: skip
        if mode == SigningMode.DETACHED:
            shutil.copyfile(signature, output)
            return
        signature_bytes = signature.read_bytes()
        with output.open("wb") as signed, source.open("rb") as module:
            shutil.copyfileobj(module, signed)
            signed.write(signature_bytes)
            signed.write(module_signature_trailer(len(signature_bytes)))


def _agent_pid(socket_path: Path) -> int | None:
    """The PID of the process listening on a Unix socket (its peer credentials), if any."""
    if not socket_path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(str(socket_path))
        except OSError:
            return None
        credentials = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    pid, _uid, _gid = struct.unpack("3i", credentials)
    return pid if pid > 0 else None


def _process_is_running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper has finished)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def stop_gpg_agent(home: Path, timeout: float = 2.0) -> None:
    """
    Stop the gpg-agent a throwaway GnuPG home started, before the home (and the secret key
    the agent stored in it) is removed.

    Its socket is in the home itself when the user has no /run/user/UID (the signing
    service's system user has none): then the agent is found by the socket's peer
    credentials and sent SIGTERM, which saves a `gpgconf --kill` process per signature.
    Otherwise, or if that fails, `gpgconf --kill gpg-agent`.
    """
    if not Path(f"/run/user/{os.getuid()}").exists():
        pid = _agent_pid(home / "S.gpg-agent")
        if pid is not None and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not _process_is_running(pid):
                    return
                time.sleep(0.002)
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
        capture_output=True,
        check=False,
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
            stop_gpg_agent(home)


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
            stop_gpg_agent(home)
