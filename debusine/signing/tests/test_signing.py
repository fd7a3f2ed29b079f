"""
Signing with stored keys through `debusine-signing sign`, checked by the tools that verify
signatures in the field: sbverify for UEFI, gpgv for OpenPGP.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
import pytest

from debusine.testing.signing import (
    SigningInstance,
    SoftHsmKey,
    build_efi_binary,
    softhsm_key,
)

pytestmark = pytest.mark.django_db


def public_key(signing: SigningInstance, fingerprint: str) -> bytes:
    with psycopg.connect(signing.database_url) as connection:
        row = connection.execute(
            "SELECT public_key FROM signing_key WHERE fingerprint = %s", (fingerprint,)
        ).fetchone()
    assert row is not None
    return bytes(row[0])


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
    signing.run(
        "sign", "openpgp", str(release), "--key", fingerprint, "--mode", "detached",
        "--output", str(signature),
    )  # fmt: skip
    assert signature.read_text().startswith("-----BEGIN PGP SIGNATURE-----")
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
