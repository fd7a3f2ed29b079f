"""
`debusine-signing` against its own throwaway database, run as subprocesses.

The test process keeps the server's settings (pytest-django); the signing side is reached only
through its command and through plain psycopg connections to its database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from debusine.server.project import instance
from debusine.signing.service_keys import NaclProtectedKey, load_service_key, unseal
from debusine.testing.signing import SigningInstance

pytestmark = pytest.mark.django_db


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def test_migrate_creates_the_signing_tables_in_the_signing_database_only(
    signing: SigningInstance,
) -> None:
    from django.conf import settings
    from django.db import connection

    assert {"signing_key", "signing_auditlog"} <= tables(signing.database_url)
    # Not one server table in the signing database...
    assert not any(name.startswith("db_") for name in tables(signing.database_url))
    # ...and not one signing table in the server's, although the command ran with
    # DEBUSINE_DATABASE_URL in its environment.
    assert signing.environment["DEBUSINE_DATABASE_URL"] == settings.DEBUSINE_DATABASE_URL
    server_tables = set(connection.introspection.table_names())
    assert "db_workrequest" in server_tables
    assert not {"signing_key", "signing_auditlog"} & server_tables


def test_signing_settings_know_one_database_only(signing: SigningInstance) -> None:
    probe = (
        "import json, debusine.signing.settings as s;"
        "print(json.dumps({alias: d['NAME'] for alias, d in s.DATABASES.items()}))"
    )
    environment = {
        **signing.environment,
        "DJANGO_SETTINGS_MODULE": "debusine.server.project.settings",
    }
    output = subprocess.run(
        [sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True
    ).stdout
    name = instance.parse_database_url(signing.database_url).name
    assert json.loads(output) == {"default": name}


def test_the_servers_settings_file_is_never_read(signing: SigningInstance, tmp_path: Path) -> None:
    """
    On a machine with the server installed too, /etc/debusine/server/settings.toml is the
    server's (mode 0640, group debusine-server): the signing side must not even open it.
    """
    unreadable = tmp_path / "server-settings.toml"
    unreadable.write_text("this is not TOML = = =\n")
    signing.environment["DEBUSINE_SETTINGS_FILE"] = str(unreadable)
    probe = "import debusine.signing.settings as s; print(sorted(s.DATABASES))"
    output = subprocess.run(
        [sys.executable, "-c", probe],
        env=signing.environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.strip() == "['default']"
    generated = signing.run("key", "generate", "openpgp", "Archive <a@example.org>")
    assert len(generated.stdout.strip()) == 40
    probe = (
        "import sys, debusine.signing.main; "
        "print('debusine.server.project.settings' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        env=signing.environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert loaded.strip() == "False"


def test_generate_and_list_keys(signing: SigningInstance) -> None:
    openpgp = signing.run("key", "generate", "openpgp", "Archive <archive@example.org>")
    uefi = signing.run("key", "generate", "uefi", "Secure Boot test")
    openpgp_fingerprint = openpgp.stdout.strip()
    uefi_fingerprint = uefi.stdout.strip()
    assert len(openpgp_fingerprint) == 40
    assert len(uefi_fingerprint) == 64
    listed = [
        json.loads(line) for line in signing.run("key", "list", "--json").stdout.splitlines()
    ]
    assert {(entry["purpose"], entry["fingerprint"], entry["storage"]) for entry in listed} == {
        ("openpgp", openpgp_fingerprint, "nacl"),
        ("uefi", uefi_fingerprint, "nacl"),
    }
    uefi_entry = next(entry for entry in listed if entry["purpose"] == "uefi")
    # 15 years by default: the certificate's notAfter is recorded as the key's expiry.
    assert uefi_entry["expires_at"][:4] == str(int(uefi_entry["created_at"][:4]) + 15)


def test_grants_are_added_listed_removed_and_audited(signing: SigningInstance) -> None:
    fingerprint = signing.run("key", "generate", "openpgp", "Granted").stdout.strip()
    signing.run("grant", "add", "openpgp", fingerprint, "debian")
    signing.run("grant", "add", "openpgp", fingerprint, "debian")  # already there: no-op
    signing.run("grant", "add", "openpgp", fingerprint, "security")
    assert signing.run("grant", "list").stdout == (
        f"openpgp\t{fingerprint}\tdebian\nopenpgp\t{fingerprint}\tsecurity\n"
    )
    signing.run("grant", "remove", "openpgp", fingerprint, "debian")
    assert signing.run("grant", "list", "--fingerprint", fingerprint).stdout == (
        f"openpgp\t{fingerprint}\tsecurity\n"
    )
    again = signing.run("grant", "remove", "openpgp", fingerprint, "debian", check=False)
    assert again.returncode == 2
    assert f"workspace debian has no grant on openpgp key {fingerprint}" in again.stderr
    unknown = signing.run("grant", "add", "openpgp", "F" * 40, "debian", check=False)
    assert unknown.returncode == 2
    assert f"no openpgp key with fingerprint {'F' * 40}" in unknown.stderr
    rows = [json.loads(line) for line in signing.run("audit", "show").stdout.splitlines()]
    assert [(row["event"], row["data"].get("workspace")) for row in rows] == [
        ("generate", None),
        ("grant", "debian"),
        ("grant", "security"),
        ("revoke", "debian"),
    ]


def test_uefi_algorithm_and_lifetime_are_configurable(signing: SigningInstance) -> None:
    signing.environment["DEBUSINE_SIGNING_UEFI_KEY_ALGORITHM"] = "rsa:3072"
    signing.environment["DEBUSINE_SIGNING_UEFI_CERTIFICATE_DAYS"] = "30"
    fingerprint = signing.run("key", "generate", "uefi", "Short-lived").stdout.strip()
    with psycopg.connect(signing.database_url) as connection:
        row = connection.execute(
            "SELECT public_key, expires_at - created_at FROM signing_key WHERE fingerprint = %s",
            (fingerprint,),
        ).fetchone()
    assert row is not None
    certificate, lifetime = row
    assert 29 <= lifetime.days <= 30
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text"],
        input=bytes(certificate),
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert "Public-Key: (3072 bit)" in text


def test_group_readable_service_key_is_refused_in_one_line(signing: SigningInstance) -> None:
    signing.service_key.chmod(0o644)
    result = signing.run("key", "generate", "openpgp", "Refused", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "is accessible by group or others (mode 0644)" in result.stderr
    assert tables(signing.database_url)  # still there; nothing was generated:
    assert signing.run("key", "list").stdout == ""
    # The signing worker refuses to start with it, in one line, before reaching any server.
    from debusine.testing.worker import write_worker_config

    config = write_worker_config(signing.directory / "worker", "https://debusine.example.org/api")
    started = signing.run("signing_worker", "--config-dir", str(config), check=False)
    assert started.returncode == 2
    assert started.stderr.strip().count("\n") == 0
    assert "is accessible by group or others (mode 0644)" in started.stderr


def test_database_dump_holds_no_plaintext_private_key(signing: SigningInstance) -> None:
    fingerprints = [
        signing.run("key", "generate", "openpgp", "Dump test <dump@example.org>").stdout.strip(),
        signing.run("key", "generate", "uefi", "Dump test").stdout.strip(),
    ]
    dump = subprocess.run(
        ["pg_dump", "--no-owner", "--dbname", signing.database_url],
        capture_output=True,
        check=True,
    ).stdout
    service_key = load_service_key(signing.service_key)
    with psycopg.connect(signing.database_url) as connection:
        stored = connection.execute("SELECT fingerprint, private_key FROM signing_key").fetchall()
    assert sorted(fingerprint for fingerprint, _ in stored) == sorted(fingerprints)
    for fingerprint, protected in stored:
        assert fingerprint.encode() in dump  # the dump does hold the keys' rows
        plaintext = unseal(NaclProtectedKey.model_validate(protected), [service_key])
        assert b"PRIVATE KEY" in plaintext
        # Neither the key as a whole nor any line of its armor/PEM body is in the dump.
        assert plaintext not in dump
        body = [line for line in plaintext.splitlines() if len(line) >= 32]
        assert body
        for line in body:
            assert line not in dump
        assert b"".join(body) not in dump


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE signing_auditlog SET created_by = 'someone else'",
        "DELETE FROM signing_auditlog",
        "TRUNCATE signing_auditlog",
    ],
)
def test_audit_log_refuses_changes_even_from_its_owner(
    signing: SigningInstance, statement: str
) -> None:
    signing.run("key", "generate", "openpgp", "Audited")
    with psycopg.connect(signing.database_url) as connection:
        owner, current = connection.execute(
            "SELECT tableowner, current_user FROM pg_tables WHERE tablename = 'signing_auditlog'"
        ).fetchone() or ("", "")
        assert owner == current
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            connection.execute(statement)
        connection.rollback()
        count = connection.execute("SELECT count(*), min(created_by) FROM signing_auditlog")
        assert count.fetchone() == (1, "cli:" + current_user_name())
    assert "chain intact" in signing.run("audit", "verify").stdout


def current_user_name() -> str:
    import getpass

    return getpass.getuser()


def test_audit_verify_finds_an_edit_made_behind_the_triggers(signing: SigningInstance) -> None:
    for description in ("one", "two", "three"):
        signing.run("key", "generate", "openpgp", description)
    assert "3 row(s), chain intact" in signing.run("audit", "verify").stdout
    with psycopg.connect(signing.database_url, autocommit=True) as connection:
        # Only by dropping the guard (as its owner) can a row change; the chain shows it.
        connection.execute("ALTER TABLE signing_auditlog DISABLE TRIGGER USER")
        connection.execute(
            "UPDATE signing_auditlog SET data = '{}'::jsonb"
            " WHERE id = (SELECT min(id) + 1 FROM signing_auditlog)"
        )
    result = signing.run("audit", "verify", check=False)
    assert result.returncode == 2
    assert "content does not match its hash" in result.stderr
    assert "audit log is inconsistent: 1 problem(s)" in result.stderr


def test_audit_verify_finds_a_removed_row(signing: SigningInstance) -> None:
    for description in ("one", "two", "three"):
        signing.run("key", "generate", "openpgp", description)
    with psycopg.connect(signing.database_url, autocommit=True) as connection:
        connection.execute("ALTER TABLE signing_auditlog DISABLE TRIGGER USER")
        connection.execute(
            "DELETE FROM signing_auditlog WHERE id = (SELECT min(id) + 1 FROM signing_auditlog)"
        )
    result = signing.run("audit", "verify", check=False)
    assert result.returncode == 2
    assert "previous hash does not match the row before it" in result.stderr


def test_disabled_key_is_listed_disabled_and_audited(signing: SigningInstance) -> None:
    fingerprint = signing.run("key", "generate", "openpgp", "Retired").stdout.strip()
    signing.run("key", "disable", "openpgp", fingerprint)
    (entry,) = [
        json.loads(line)
        for line in signing.run("key", "list", "--json").stdout.split("\n")
        if line
    ]
    assert entry["disabled"] is True
    events = [
        json.loads(line)["event"] for line in signing.run("audit", "show").stdout.splitlines()
    ]
    assert events == ["generate", "disable"]
    unknown = signing.run("key", "disable", "openpgp", "0" * 40, check=False)
    assert unknown.returncode == 2
    assert f"no openpgp key with fingerprint {'0' * 40}" in unknown.stderr


def test_openpgp_expiry_set_then_extended_and_expired_key_refused(
    signing: SigningInstance, tmp_path: Path
) -> None:
    fingerprint = signing.run("key", "generate", "openpgp", "Expiring").stdout.strip()
    (entry,) = [
        json.loads(line) for line in signing.run("key", "list", "--json").stdout.splitlines()
    ]
    assert entry["expires_at"] is None
    signing.run("key", "set_expiry", fingerprint, "2y")
    (entry,) = [
        json.loads(line) for line in signing.run("key", "list", "--json").stdout.splitlines()
    ]
    assert entry["expires_at"] is not None
    assert entry["expires_at"][:4] in {str(int(entry["created_at"][:4]) + n) for n in (1, 2)}
    # The exported public key carries the new expiry too (gpg reads it back).
    with psycopg.connect(signing.database_url) as connection:
        row = connection.execute(
            "SELECT public_key FROM signing_key WHERE fingerprint = %s", (fingerprint,)
        ).fetchone()
    assert row is not None
    shown = subprocess.run(
        ["gpg", "--with-colons", "--show-keys"],
        input=bytes(row[0]),
        capture_output=True,
        check=True,
    ).stdout.decode()
    (pub,) = [line for line in shown.splitlines() if line.startswith("pub:")]
    assert pub.split(":")[6] != ""
    # Pushed into the past by hand: signing is refused, with the date.
    with psycopg.connect(signing.database_url) as connection:
        connection.execute(
            "UPDATE signing_key SET expires_at = now() - interval '1 day' WHERE fingerprint = %s",
            (fingerprint,),
        )
    release = tmp_path / "Release"
    release.write_text("Suite: stable\n")
    refused = signing.run(
        "sign", "openpgp", str(release), "--key", fingerprint, "--mode", "clear",
        "--output", str(tmp_path / "InRelease"), check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "expired on" in refused.stderr
    events = [
        json.loads(line)["event"] for line in signing.run("audit", "show").stdout.splitlines()
    ]
    assert events == ["generate", "set_expiry"]
    assert "chain intact" in signing.run("audit", "verify").stdout
