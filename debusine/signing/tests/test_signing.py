"""
Signing with stored keys through `debusine-signing sign`, checked by the tools that verify
signatures in the field: sbverify for UEFI, gpgv for OpenPGP.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from debusine.signing.service_keys import NaclProtectedKey, load_service_key, unseal
from debusine.testing.signing import (
    SOFTHSM_MODULE,
    SigningInstance,
    SoftHsmKey,
    build_efi_binary,
    build_kernel_module,
    softhsm_key,
    verify_kernel_module,
)

pytestmark = pytest.mark.django_db


def public_key(signing: SigningInstance, fingerprint: str) -> bytes:
    with psycopg.connect(signing.database_url) as connection:
        row = connection.execute(
            "SELECT public_key FROM signing_key WHERE fingerprint = %s", (fingerprint,)
        ).fetchone()
    assert row is not None
    return bytes(row[0])


def private_key(signing: SigningInstance, fingerprint: str) -> bytes:
    """The software key `fingerprint`, unsealed with the instance's service key."""
    with psycopg.connect(signing.database_url) as connection:
        row = connection.execute(
            "SELECT private_key FROM signing_key WHERE fingerprint = %s", (fingerprint,)
        ).fetchone()
    assert row is not None
    return unseal(NaclProtectedKey.model_validate(row[0]), [load_service_key(signing.service_key)])


#: The kernel's module signing tool in Debian 12 (linux-kbuild-6.1).
SIGN_FILE = Path("/usr/lib/linux-kbuild-6.1/scripts/sign-file")


def keyring(signing: SigningInstance, fingerprint: str, path: Path) -> Path:
    """A gpgv keyring holding only the public key `fingerprint`."""
    subprocess.run(
        ["gpg", "--dearmor", "--output", str(path)],
        input=public_key(signing, fingerprint),
        check=True,
        capture_output=True,
    )
    return path


def gpgv(keyring_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gpgv", "--status-fd", "1", "--keyring", str(keyring_path), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )


def audit_rows(signing: SigningInstance) -> list[dict[str, object]]:
    return [json.loads(line) for line in signing.run("audit", "show").stdout.splitlines()]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def running_gpg_agents() -> list[int]:
    """PIDs of the gpg-agent processes of this machine that have not exited."""
    agents = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, state = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if name == "gpg-agent" and state.split()[0] != "Z":
            agents.append(int(stat.parent.name))
    return agents


@pytest.fixture
def efi_binary(tmp_path: Path) -> Path:
    return build_efi_binary(tmp_path / "grubx64.efi")


def test_uefi_attached_signature_verifies_with_sbverify(
    signing: SigningInstance, efi_binary: Path, tmp_path: Path
) -> None:
    fingerprint = signing.run("key", "generate", "uefi", "Secure Boot").stdout.strip()
    certificate = tmp_path / "certificate.pem"
    certificate.write_bytes(public_key(signing, fingerprint))
    signed = tmp_path / "grubx64.efi.signed"
    signing.run(
        "sign", "uefi", str(efi_binary), "--key", fingerprint, "--mode", "attached",
        "--output", str(signed),
    )  # fmt: skip
    verified = subprocess.run(
        ["sbverify", "--cert", str(certificate), str(signed)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr
    assert "Signature verification OK" in verified.stdout
    # Another certificate does not verify it: the check above can fail.
    other = signing.run("key", "generate", "uefi", "Other").stdout.strip()
    certificate.write_bytes(public_key(signing, other))
    refused = subprocess.run(
        ["sbverify", "--cert", str(certificate), str(signed)], capture_output=True, text=True
    )
    assert refused.returncode != 0
    sign_row = next(row for row in audit_rows(signing) if row["event"] == "sign")
    assert sign_row["fingerprint"] == fingerprint
    data = sign_row["data"]
    assert isinstance(data, dict)
    assert data["file"] == "grubx64.efi"
    assert data["mode"] == "attached"
    import hashlib

    assert data["input_sha256"] == hashlib.sha256(efi_binary.read_bytes()).hexdigest()
    assert data["output_sha256"] == hashlib.sha256(signed.read_bytes()).hexdigest()


def test_uefi_detached_signature_verifies_with_sbverify(
    signing: SigningInstance, efi_binary: Path, tmp_path: Path
) -> None:
    fingerprint = signing.run("key", "generate", "uefi", "Secure Boot").stdout.strip()
    certificate = tmp_path / "certificate.pem"
    certificate.write_bytes(public_key(signing, fingerprint))
    signature = tmp_path / "grubx64.efi.sig"
    signing.run(
        "sign", "uefi", str(efi_binary), "--key", fingerprint, "--mode", "detached",
        "--output", str(signature),
    )  # fmt: skip
    verified = subprocess.run(
        ["sbverify", "--cert", str(certificate), "--detached", str(signature), str(efi_binary)],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr


def test_openpgp_detached_signature_verifies_with_gpgv(
    signing: SigningInstance, tmp_path: Path
) -> None:
    fingerprint = signing.run("key", "generate", "openpgp", "Archive <a@example.org>").stdout
    fingerprint = fingerprint.strip()
    release = tmp_path / "Release"
    release.write_text("Origin: Test\nSuite: unstable\n")
    signature = tmp_path / "Release.gpg"
    # The throwaway GnuPG homes go here, so that the agents they start can be told apart (a
    # short path: the agent's socket path must fit in a sockaddr_un).
    homes = Path(tempfile.mkdtemp(prefix="sig-", dir="/tmp"))
    signing.environment["TMPDIR"] = str(homes)
    signing.run(
        "sign", "openpgp", str(release), "--key", fingerprint, "--mode", "detached",
        "--output", str(signature),
    )  # fmt: skip
    assert signature.read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    # The agent that held the decrypted key is gone, and so is its home.
    assert list(homes.iterdir()) == []
    assert [pid for pid in running_gpg_agents() if str(homes) in command_line(pid)] == []
    homes.rmdir()
    ring = keyring(signing, fingerprint, tmp_path / "archive.gpg")
    assert gpgv(ring, signature, release).returncode == 0
    release.write_text("Origin: Test\nSuite: tampered\n")
    assert gpgv(ring, signature, release).returncode != 0


def test_rollover_clear_signature_by_two_keys_verifies_with_either_keyring(
    signing: SigningInstance, tmp_path: Path
) -> None:
    old = signing.run("key", "generate", "openpgp", "Old <old@example.org>").stdout.strip()
    new = signing.run("key", "generate", "openpgp", "New <new@example.org>").stdout.strip()
    third = signing.run("key", "generate", "openpgp", "Other <x@example.org>").stdout.strip()
    release = tmp_path / "Release"
    release.write_text("Origin: Test\nSuite: stable\n")
    in_release = tmp_path / "InRelease"
    signing.run(
        "sign", "openpgp", str(release), "--key", old, "--key", new, "--mode", "clear",
        "--output", str(in_release),
    )  # fmt: skip
    assert in_release.read_text().startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    # As apt does: a good signature by a key of the keyring is enough, the other one's key
    # is missing from it (so gpgv's exit status alone would say "failed").
    for fingerprint in (old, new):
        checked = gpgv(keyring(signing, fingerprint, tmp_path / f"{fingerprint}.gpg"), in_release)
        assert f"[GNUPG:] VALIDSIG {fingerprint}" in checked.stdout
        assert checked.stdout.count("[GNUPG:] VALIDSIG") == 1
    checked = gpgv(keyring(signing, third, tmp_path / "third.gpg"), in_release)
    assert "VALIDSIG" not in checked.stdout
    assert checked.stdout.count("[GNUPG:] NO_PUBKEY") == 2
    signs = [row for row in audit_rows(signing) if row["event"] == "sign"]
    assert sorted(str(row["fingerprint"]) for row in signs) == sorted([old, new])


def test_disabled_and_expired_keys_refuse_new_work(
    signing: SigningInstance, tmp_path: Path
) -> None:
    disabled = signing.run("key", "generate", "openpgp", "Disabled").stdout.strip()
    expired = signing.run("key", "generate", "openpgp", "Expired").stdout.strip()
    signing.run("key", "disable", "openpgp", disabled)
    with psycopg.connect(signing.database_url) as connection:
        connection.execute(
            "UPDATE signing_key SET expires_at = now() - interval '1 day' WHERE fingerprint = %s",
            (expired,),
        )
    release = tmp_path / "Release"
    release.write_text("Suite: stable\n")
    rows_before = len(audit_rows(signing))
    for fingerprint, reason in ((disabled, "is disabled since"), (expired, "expired on")):
        output = tmp_path / f"{fingerprint}.gpg"
        result = signing.run(
            "sign", "openpgp", str(release), "--key", fingerprint, "--mode", "detached",
            "--output", str(output), check=False,
        )  # fmt: skip
        assert result.returncode == 2
        assert f"openpgp key {fingerprint} {reason}" in result.stderr
        assert not output.exists()
    assert len(audit_rows(signing)) == rows_before


def test_no_signature_when_the_audit_row_cannot_be_written(
    signing: SigningInstance, tmp_path: Path
) -> None:
    fingerprint = signing.run("key", "generate", "openpgp", "Fail closed").stdout.strip()
    with psycopg.connect(signing.database_url, autocommit=True) as connection:
        connection.execute(
            "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'audit storage is full'; END; $$"
        )
        connection.execute(
            "CREATE TRIGGER refuse_insert BEFORE INSERT ON signing_auditlog"
            " FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
        )
    release = tmp_path / "Release"
    release.write_text("Suite: stable\n")
    output = tmp_path / "Release.gpg"
    result = signing.run(
        "sign", "openpgp", str(release), "--key", fingerprint, "--mode", "detached",
        "--output", str(output), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "audit storage is full" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["Release", "signing"]


@pytest.fixture
def hsm(tmp_path: Path, signing: SigningInstance) -> SoftHsmKey:
    key = softhsm_key(tmp_path / "hsm")
    signing.environment.update(key.environment)
    return key


def test_softhsm_key_registered_signs_and_verifies(
    signing: SigningInstance, hsm: SoftHsmKey, efi_binary: Path, tmp_path: Path
) -> None:
    registered = signing.run(
        "register_pkcs11_static_key", "uefi", hsm.uri, str(hsm.certificate), "HSM"
    )
    fingerprint = registered.stdout.strip()
    (entry,) = [
        json.loads(line) for line in signing.run("key", "list", "--json").stdout.splitlines()
    ]
    assert (entry["fingerprint"], entry["storage"]) == (fingerprint, "pkcs11-static")
    signed = tmp_path / "signed.efi"
    signing.run(
        "sign", "uefi", str(efi_binary), "--key", fingerprint, "--mode", "attached",
        "--output", str(signed),
    )  # fmt: skip
    verified = subprocess.run(
        ["sbverify", "--cert", str(hsm.certificate), str(signed)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr
    events = [(row["event"], row["fingerprint"]) for row in audit_rows(signing)]
    assert events == [("register", fingerprint), ("sign", fingerprint)]
    # The PIN file must stay private: once readable by others, the key refuses to sign.
    hsm.pin_file.chmod(0o644)
    result = signing.run(
        "sign", "uefi", str(efi_binary), "--key", fingerprint, "--mode", "attached",
        "--output", str(tmp_path / "again.efi"), check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is accessible by group or others (mode 0644)" in result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("object=uefi", "object=missing"), "has no private key labelled 'missing'"),
        (("token=signing", "token=absent"), "no PKCS#11 token labelled 'absent'"),
    ],
)
def test_softhsm_registration_refuses_a_key_the_token_does_not_hold(
    signing: SigningInstance, hsm: SoftHsmKey, change: tuple[str, str], message: str
) -> None:
    uri = hsm.uri.replace(*change)
    result = signing.run(
        "register_pkcs11_static_key", "uefi", uri, str(hsm.certificate), "HSM", check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert signing.run("key", "list").stdout == ""


def test_softhsm_registration_refuses_another_keys_certificate(
    signing: SigningInstance, hsm: SoftHsmKey, tmp_path: Path
) -> None:
    other = signing.run("key", "generate", "uefi", "Software").stdout.strip()
    certificate = tmp_path / "other.pem"
    certificate.write_bytes(public_key(signing, other))
    result = signing.run(
        "register_pkcs11_static_key", "uefi", hsm.uri, str(certificate), "HSM", check=False
    )
    assert result.returncode == 2
    assert "is not the certificate's key" in result.stderr


def test_debsign_signs_dsc_and_changes_with_fixed_checksums(
    signing: SigningInstance, tmp_path: Path
) -> None:
    from debusine.client.tests.debian_build import build_upload

    fingerprint = signing.run("key", "generate", "openpgp", "Uploader <u@example.org>").stdout
    fingerprint = fingerprint.strip()
    built = build_upload(tmp_path / "upload")
    unsigned_dsc = built.dsc.read_bytes()
    signing.run("debsign", str(built.changes), "--key", fingerprint)
    ring = keyring(signing, fingerprint, tmp_path / "uploader.gpg")
    for signed in (built.changes, built.dsc):
        assert signed.read_text().startswith("-----BEGIN PGP SIGNED MESSAGE-----")
        checked = gpgv(ring, signed)
        assert f"[GNUPG:] VALIDSIG {fingerprint}" in checked.stdout
    assert built.dsc.read_bytes() != unsigned_dsc
    # dscverify checks the signature and that the .changes lists the signed files' checksums.
    verified = subprocess.run(
        ["dscverify", "--no-default-keyrings", "--keyring", str(ring), str(built.changes)],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    (row,) = [row for row in audit_rows(signing) if row["event"] == "debsign"]
    data = row["data"]
    assert isinstance(data, dict)
    assert set(data["output_sha256"]) == {
        built.changes.name,
        built.dsc.name,
        built.changes.name.replace(".changes", ".buildinfo"),
    }
    # A tampered .dsc no longer matches the .changes: the check above could fail.
    built.dsc.write_bytes(built.dsc.read_bytes().replace(b"hello-client", b"hello-klient", 1))
    tampered = subprocess.run(
        ["dscverify", "--no-default-keyrings", "--keyring", str(ring), str(built.changes)],
        capture_output=True,
        text=True,
    )
    assert tampered.returncode != 0


def test_rate_limit_refuses_a_burst_beyond_it(signing: SigningInstance, tmp_path: Path) -> None:
    fingerprint = signing.run("key", "generate", "openpgp", "Limited").stdout.strip()
    signing.environment["DEBUSINE_SIGNING_RATE_LIMIT_PER_MINUTE"] = "2"
    release = tmp_path / "Release"
    release.write_text("Suite: stable\n")
    results = [
        signing.run(
            "sign",
            "openpgp",
            str(release),
            "--key",
            fingerprint,
            "--mode",
            "detached",
            "--output",
            str(tmp_path / f"Release-{index}.gpg"),
            check=False,
        )
        for index in range(3)
    ]
    assert [result.returncode for result in results] == [0, 0, 2]
    assert "made 2 signatures in the last minute (limit 2" in results[2].stderr
    assert not (tmp_path / "Release-2.gpg").exists()


def test_kernel_module_signature_verifies_as_the_kernel_checks_it(
    signing: SigningInstance, tmp_path: Path
) -> None:
    fingerprint = signing.run("key", "generate", "kmod", "Module signing").stdout.strip()
    certificate = tmp_path / "kmod.pem"
    certificate.write_bytes(public_key(signing, fingerprint))
    module = build_kernel_module(tmp_path / "hello.ko")
    signed = tmp_path / "signed" / "hello.ko"
    signed.parent.mkdir()
    signing.run(
        "sign", "kmod", str(module), "--key", fingerprint, "--mode", "attached",
        "--output", str(signed),
    )  # fmt: skip
    verified = verify_kernel_module(signed, certificate)
    assert verified.returncode == 0, verified.stderr
    # Byte for byte what the kernel's own sign-file makes with the same key (RSA PKCS#1 v1.5
    # signatures are deterministic).
    key_file = tmp_path / "kmod.key"
    key_file.write_bytes(private_key(signing, fingerprint))
    by_sign_file = tmp_path / "by-sign-file.ko"
    subprocess.run(
        [
            str(SIGN_FILE),
            "sha256",
            str(key_file),
            str(certificate),
            str(module),
            str(by_sign_file),
        ],
        check=True,
        capture_output=True,
    )
    assert signed.read_bytes() == by_sign_file.read_bytes()
    # modinfo (kmod) reads the signature the way modprobe does: signer and hash.
    info = subprocess.run(["modinfo", str(signed)], capture_output=True, text=True, check=True)
    assert "signer:         Module signing" in info.stdout
    assert "sig_hashalgo:   sha256" in info.stdout
    # One flipped byte of the module and the signature no longer verifies.
    tampered = tmp_path / "tampered.ko"
    data = bytearray(signed.read_bytes())
    data[64] ^= 1
    tampered.write_bytes(bytes(data))
    assert verify_kernel_module(tampered, certificate).returncode != 0
    # Detached: the PKCS#7 signature alone, over the unsigned module.
    detached = tmp_path / "hello.ko.p7s"
    signing.run(
        "sign", "kmod", str(module), "--key", fingerprint, "--mode", "detached",
        "--output", str(detached),
    )  # fmt: skip
    checked = subprocess.run(
        [
            "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(detached),
            "-content", str(module), "-certfile", str(certificate), "-CAfile", str(certificate),
            "-purpose", "any", "-out", "/dev/null",
        ],
        capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    events = [(row["event"], row["purpose"]) for row in audit_rows(signing)]
    assert events == [("generate", "kmod"), ("sign", "kmod"), ("sign", "kmod")]


def test_kernel_module_signed_with_a_softhsm_key(signing: SigningInstance, tmp_path: Path) -> None:
    key = softhsm_key(tmp_path / "hsm", label="kmod")
    signing.environment.update(key.environment)
    fingerprint = signing.run(
        "register_pkcs11_static_key", "kmod", key.uri, str(key.certificate), "HSM modules"
    ).stdout.strip()
    signed = tmp_path / "signed.ko"
    signing.run(
        "sign", "kmod", str(build_kernel_module(tmp_path / "hello.ko")), "--key", fingerprint,
        "--mode", "attached", "--output", str(signed),
    )  # fmt: skip
    verified = verify_kernel_module(signed, key.certificate)
    assert verified.returncode == 0, verified.stderr


def private_key_objects(hsm: SoftHsmKey) -> str:
    """pkcs11-tool's listing of the token's private keys (with their access flags)."""
    return subprocess.run(
        [
            "pkcs11-tool", "--module", str(SOFTHSM_MODULE), "--token-label", "signing",
            "--login", "--pin", hsm.pin_file.read_text(), "--list-objects", "--type", "privkey",
        ],
        env={**os.environ, **hsm.environment}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_uefi_key_generated_inside_the_hsm_never_leaves_it(
    signing: SigningInstance, hsm: SoftHsmKey, efi_binary: Path, tmp_path: Path
) -> None:
    token_uri = f"pkcs11:token=signing?pin-source=file:{hsm.pin_file}"
    generated = signing.run("key", "generate", "uefi", "HSM born", "--pkcs11-token", token_uri)
    fingerprint = generated.stdout.strip()
    (entry,) = [
        json.loads(line) for line in signing.run("key", "list", "--json").stdout.splitlines()
    ]
    assert (entry["fingerprint"], entry["storage"]) == (fingerprint, "pkcs11-static")
    (row,) = audit_rows(signing)
    data = row["data"]
    assert isinstance(data, dict) and data["generated_in_token"] is True
    label = str(data["pkcs11_uri"]).split("object=")[1].split(";")[0]
    # The token holds it as sensitive and never extractable: it cannot hand it out.
    listing = private_key_objects(hsm)
    block = listing[listing.index(f"label:      {label}") :].split("Private Key Object")[0]
    assert "never extractable" in block and "always sensitive" in block
    # The database holds its URI and certificate, no key material.
    with psycopg.connect(signing.database_url) as connection:
        rows = connection.execute("SELECT private_key::text FROM signing_key").fetchall()
    ((stored,),) = rows
    assert "PRIVATE KEY" not in stored and "encrypted" not in stored
    # It signs, through the token, and sbverify accepts the token's self-signed certificate.
    certificate = tmp_path / "hsm-born.pem"
    certificate.write_bytes(public_key(signing, fingerprint))
    signed = tmp_path / "signed.efi"
    signing.run(
        "sign", "uefi", str(efi_binary), "--key", fingerprint, "--mode", "attached",
        "--output", str(signed),
    )  # fmt: skip
    verified = subprocess.run(
        ["sbverify", "--cert", str(certificate), str(signed)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr


def test_token_session_cap_refuses_when_every_session_is_taken(
    signing: SigningInstance, hsm: SoftHsmKey, efi_binary: Path, tmp_path: Path
) -> None:
    fingerprint = signing.run(
        "register_pkcs11_static_key", "uefi", hsm.uri, str(hsm.certificate), "HSM"
    ).stdout.strip()
    locks = tmp_path / "locks"
    signing.environment.update(
        {
            "DEBUSINE_SIGNING_LOCK_DIRECTORY": str(locks),
            "DEBUSINE_SIGNING_PKCS11_MAX_SESSIONS": "1",
            "DEBUSINE_SIGNING_PKCS11_SESSION_WAIT": "0.5",
        }
    )
    sign = (
        "sign", "uefi", str(efi_binary), "--key", fingerprint, "--mode", "attached",
        "--output", str(tmp_path / "signed.efi"),
    )  # fmt: skip
    # Another signing process holds the token's only session slot.
    locks.mkdir()
    holder = os.open(locks / "signing.0.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        refused = signing.run(*sign, check=False)
    finally:
        os.close(holder)
    assert refused.returncode == 2
    assert "all 1 sessions of PKCS#11 token 'signing' are in use" in refused.stderr
    assert not (tmp_path / "signed.efi").exists()
    assert [row["event"] for row in audit_rows(signing)] == ["register"]
    # Once it is free, the same request signs.
    signing.run(*sign)
    assert (tmp_path / "signed.efi").exists()
