"""Service key files and sealed private keys (Django-free)."""

from __future__ import annotations

from pathlib import Path

import pytest

from debusine.signing.service_keys import (
    PROTECTED_KEY_ADAPTER,
    NaclProtectedKey,
    ServiceKeyError,
    generate_service_key,
    load_service_key,
    load_service_keys,
    seal,
    unseal,
)


def test_generated_service_key_is_private_and_loads(tmp_path: Path) -> None:
    created = generate_service_key(tmp_path / "0.key")
    assert (tmp_path / "0.key").stat().st_mode & 0o777 == 0o600
    loaded = load_service_key(tmp_path / "0.key")
    assert loaded.public_key_b64 == created.public_key_b64


def test_existing_service_key_is_never_overwritten(tmp_path: Path) -> None:
    generate_service_key(tmp_path / "0.key")
    before = (tmp_path / "0.key").read_bytes()
    with pytest.raises(ServiceKeyError, match="already exists"):
        generate_service_key(tmp_path / "0.key")
    assert (tmp_path / "0.key").read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_service_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    generate_service_key(tmp_path / "0.key")
    (tmp_path / "0.key").chmod(mode)
    with pytest.raises(ServiceKeyError, match=f"group or others \\(mode {mode:04o}\\)") as info:
        load_service_key(tmp_path / "0.key")
    assert "\n" not in str(info.value)


def test_malformed_and_missing_service_keys_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(ServiceKeyError, match="not a base64 Curve25519 key"):
        load_service_key(bad)
    with pytest.raises(ServiceKeyError, match="cannot read service key"):
        load_service_key(tmp_path / "missing.key")
    with pytest.raises(ServiceKeyError, match="no service key configured"):
        load_service_keys([])


def test_sealed_key_holds_no_plaintext_and_opens(tmp_path: Path) -> None:
    service_keys = [generate_service_key(tmp_path / "0.key")]
    secret = b"-----BEGIN PRIVATE KEY-----\nsecret material\n-----END PRIVATE KEY-----\n"
    protected = seal(secret, service_keys)
    stored = protected.model_dump_json()
    assert b"secret material" not in stored.encode()
    reread = PROTECTED_KEY_ADAPTER.validate_json(stored)
    assert isinstance(reread, NaclProtectedKey)
    assert unseal(reread, service_keys) == secret


def test_rotation_new_key_seals_old_key_still_opens(tmp_path: Path) -> None:
    old = generate_service_key(tmp_path / "0.key")
    sealed_under_old = seal(b"old secret", [old])
    new = generate_service_key(tmp_path / "1.key")
    rotated = [new, old]
    sealed_under_new = seal(b"new secret", rotated)
    assert sealed_under_new.public_key == new.public_key_b64
    assert unseal(sealed_under_old, rotated) == b"old secret"
    assert unseal(sealed_under_new, rotated) == b"new secret"
    # Without the key that sealed it, a key does not open, and the message says why.
    with pytest.raises(ServiceKeyError, match="no configured service key has public key"):
        unseal(sealed_under_old, [new])
