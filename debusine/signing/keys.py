"""
Generating software signing keys with the tools that use them, Django-free.

OpenPGP keys come from GnuPG (`gpg --quick-generate-key` in a throwaway home), X.509 keys (UEFI
and kernel modules) from openssl (`openssl req -x509 -newkey`). Private material only ever
exists in a temporary directory readable by its owner alone, removed when generation ends;
callers seal it at once.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class KeyGenerationError(Exception):
    """A tool refused to make the key; the message says which and why (one line)."""


@dataclass(frozen=True)
class GeneratedKey:
    """A new key pair, private half still in plaintext: seal it before storing."""

    fingerprint: str
    public_key: bytes  # armored OpenPGP public key, or PEM certificate
    private_key: bytes  # armored OpenPGP secret key, or PEM private key
    expires_at: dt.datetime | None


def run_tool(
    command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a signing tool; return its standard output, raise KeyGenerationError on failure."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd, env=env)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise KeyGenerationError(f"{command[0]} failed: {reason}")
    return result.stdout


def gpg_command(home: Path, *args: str) -> list[str]:
    """A non-interactive gpg command line in the GnuPG home `home`."""
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


def gpg_colons_expiry(listing: str) -> tuple[str, dt.datetime | None]:
    """Fingerprint and expiry of the primary key in a `--with-colons` listing."""
    expires_at: dt.datetime | None = None
    fingerprint = ""
    seen_primary = False
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sec") and not seen_primary:
            seen_primary = True
            if len(fields) > 6 and fields[6]:
                expires_at = dt.datetime.fromtimestamp(int(fields[6]), tz=dt.UTC)
        elif fields[0] == "fpr" and seen_primary and not fingerprint:
            fingerprint = fields[9]
    if not fingerprint:
        raise KeyGenerationError("gpg listed no fingerprint for the new key")
    return fingerprint, expires_at


def generate_openpgp_key(description: str, *, algorithm: str, expiry: str) -> GeneratedKey:
    """A new OpenPGP signing key whose user ID is `description`."""
    with tempfile.TemporaryDirectory(prefix="debusine-signing-gpg-") as directory:
        home = Path(directory)
        run_tool(gpg_command(home, "--quick-generate-key", description, algorithm, "sign", expiry))
        listing = run_tool(gpg_command(home, "--with-colons", "--list-secret-keys"))
        fingerprint, expires_at = gpg_colons_expiry(listing)
        public = run_tool(gpg_command(home, "--armor", "--export", fingerprint))
        private = run_tool(gpg_command(home, "--armor", "--export-secret-keys", fingerprint))
        # Stop the agent this home started: it must not outlive the key material.
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )
    return GeneratedKey(fingerprint, public.encode(), private.encode(), expires_at)


def certificate_fingerprint_and_expiry(certificate: Path) -> tuple[str, dt.datetime]:
    """SHA-256 fingerprint (hex, no colons) and notAfter of a PEM certificate."""
    output = run_tool(
        [
            "openssl",
            "x509",
            "-in",
            str(certificate),
            "-noout",
            "-fingerprint",
            "-sha256",
            "-enddate",
        ]
    )
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    fingerprint_line = next(value for key, value in values.items() if "Fingerprint" in key)
    not_after = dt.datetime.strptime(values["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(
        tzinfo=dt.UTC
    )
    return fingerprint_line.replace(":", "").upper(), not_after


def generate_uefi_key(description: str, *, algorithm: str, days: int) -> GeneratedKey:
    """A new self-signed X.509 certificate and its private key, for sbsign and sign-file."""
    with tempfile.TemporaryDirectory(prefix="debusine-signing-uefi-") as directory:
        work = Path(directory)
        run_tool(
            [
                "openssl",
                "req",
                "-new",
                "-x509",
                "-newkey",
                algorithm,
                "-noenc",
                "-keyout",
                str(work / "key.pem"),
                "-out",
                str(work / "certificate.pem"),
                "-days",
                str(days),
                "-subj",
                f"/CN={description.replace('/', ' ')}/",
                "-sha256",
            ]
        )
        fingerprint, expires_at = certificate_fingerprint_and_expiry(work / "certificate.pem")
        return GeneratedKey(
            fingerprint,
            (work / "certificate.pem").read_bytes(),
            (work / "key.pem").read_bytes(),
            expires_at,
        )


@dataclass(frozen=True)
class ReexportedKey:
    """An OpenPGP key after a change to its self-signature (e.g. a new expiry)."""

    public_key: bytes
    private_key: bytes
    expires_at: dt.datetime | None


def set_openpgp_expiry(private_key: bytes, fingerprint: str, expiry: str) -> ReexportedKey:
    """Set the expiry of an OpenPGP key (`never`, `2y`, a date) and export it again."""
    with tempfile.TemporaryDirectory(prefix="debusine-signing-gpg-") as directory:
        home = Path(directory)
        secret = home / "secret.asc"
        secret.write_bytes(private_key)
        secret.chmod(0o600)
        run_tool(gpg_command(home, "--import", str(secret)))
        run_tool(gpg_command(home, "--quick-set-expire", fingerprint, expiry))
        listing = run_tool(gpg_command(home, "--with-colons", "--list-secret-keys", fingerprint))
        _fingerprint, expires_at = gpg_colons_expiry(listing)
        public = run_tool(gpg_command(home, "--armor", "--export", fingerprint))
        private = run_tool(gpg_command(home, "--armor", "--export-secret-keys", fingerprint))
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )
    return ReexportedKey(public.encode(), private.encode(), expires_at)
