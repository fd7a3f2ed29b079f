"""
The signing worker end to end: a real server with its scheduler, `debusine-signing
signing_worker` daemons on a signing database of their own, and signatures checked with gpgv
and sbverify.

Work requests are created with `debusine-admin work_request create Signing ...` (signing tasks
are not created through the API); their outcome is read from the server's database, the keys
and audit rows from the signing database, and the signed files through the API.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from debusine.client.client import DebusineClient
from debusine.client.errors import ProblemError
from debusine.client.uploads import LocalFile
from debusine.protocol.work_requests import WorkRequestStatus
from debusine.testing.signing import (
    SigningInstance,
    SoftHsmKey,
    build_efi_binary,
    signing_instance,
    softhsm_key,
    start_signing_worker,
)
from debusine.testing.throwaway import ThrowawayInstance
from debusine.testing.worker import LOG_CONNECTED, WorkerProcess

pytestmark = pytest.mark.integration

WAIT = 90


@pytest.fixture
def signing(tmp_path: Path) -> Iterator[SigningInstance]:
    from django.conf import settings

    with signing_instance(
        postgres_url=settings.DEBUSINE_DATABASE_URL, directory=tmp_path / "signing"
    ) as created:
        yield created


def start_worker(
    instance: ThrowawayInstance,
    signing: SigningInstance,
    directory: Path,
    name: str,
    environment: dict[str, str] | None = None,
) -> WorkerProcess:
    activation = instance.admin("worker", "create", name, "--worker-type", "signing")
    worker = start_signing_worker(
        signing,
        instance.api_url,
        directory / name,
        activation_token=activation.strip().splitlines()[-1],
        environment=environment,
    )
    worker.wait_for_log(LOG_CONNECTED, timeout=WAIT)
    return worker


def create_work_request(
    instance: ThrowawayInstance,
    directory: Path,
    task_name: str,
    data: dict[str, Any],
    created_by: str | None = None,
) -> int:
    data_file = directory / f"{task_name}-{time.monotonic_ns()}.yaml"
    data_file.write_text(yaml.safe_dump(data))
    creator = ["--created-by", created_by] if created_by else []
    output = instance.admin(
        "work_request", "create", "Signing", task_name, "--data", str(data_file), *creator
    )
    return int(output.strip().splitlines()[-1])


def signer(instance: ThrowawayInstance, username: str, keys: list[tuple[str, str]]) -> str:
    """A contributor of System with the signer role on `keys`; return a token key."""
    token = instance.create_contributor(username)
    for purpose, fingerprint in keys:
        instance.admin("asset", "create_signing_key", purpose, fingerprint)
        instance.admin(
            "asset", "grant_signer", purpose, fingerprint, "System", f"{username}-contributors"
        )
    return token


def wait_completed(instance: ThrowawayInstance, work_request_id: int) -> tuple[str, int | None]:
    """Wait until the work request completes; return its result and its worker's id."""
    deadline = time.monotonic() + WAIT
    with psycopg.connect(instance.database_url, autocommit=True) as connection:
        while time.monotonic() < deadline:
            row = connection.execute(
                "SELECT status, result, worker_id FROM db_workrequest WHERE id = %s",
                (work_request_id,),
            ).fetchone()
            assert row is not None
            if row[0] == WorkRequestStatus.COMPLETED:
                return str(row[1]), row[2]
            time.sleep(0.2)
    raise AssertionError(f"work request {work_request_id} still {row[0]} after {WAIT} s")


def only_key(signing: SigningInstance, purpose: str) -> tuple[str, bytes]:
    with psycopg.connect(signing.database_url) as connection:
        rows = connection.execute(
            "SELECT fingerprint, public_key FROM signing_key WHERE purpose = %s", (purpose,)
        ).fetchall()
    assert len(rows) == 1
    return rows[0][0], bytes(rows[0][1])


def upload_artifact(
    instance: ThrowawayInstance,
    token: str,
    files: dict[str, Path],
    data: dict[str, Any] | None = None,
) -> tuple[DebusineClient, int]:
    client = DebusineClient(instance.api_url, token)
    local = {name: LocalFile.from_path(path) for name, path in files.items()}
    artifact = client.artifact_create(
        "debusine:signing-input", local, data or {}, workspace="System"
    )
    client.upload_artifact_files(artifact, local)
    return client, artifact.id


def download_output(
    instance: ThrowawayInstance, client: DebusineClient, work_request_id: int, directory: Path
) -> dict[str, Path]:
    with psycopg.connect(instance.database_url) as connection:
        (artifact_id,) = connection.execute(
            "SELECT id FROM db_artifact WHERE created_by_work_request_id = %s"
            " AND category = 'debusine:signing-output'",
            (work_request_id,),
        ).fetchone() or (None,)
    assert artifact_id is not None
    artifact = client.artifact_get(artifact_id)
    downloaded: dict[str, Path] = {}
    directory.mkdir(parents=True, exist_ok=True)
    for name, file in artifact.files.items():
        client.download_file(name, file, directory / name)
        downloaded[name] = directory / name
    return downloaded


def audit_work_requests(signing: SigningInstance, event: str) -> list[tuple[int, str]]:
    with psycopg.connect(signing.database_url) as connection:
        rows = connection.execute(
            "SELECT created_by_work_request_id, created_by FROM signing_auditlog"
            " WHERE event = %s ORDER BY id",
            (event,),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def test_generate_openpgp_key_and_clear_sign_verified_by_gpgv(
    instance: ThrowawayInstance, signing: SigningInstance, tmp_path: Path
) -> None:
    worker = start_worker(instance, signing, tmp_path, "signer-openpgp.example")
    try:
        generate = create_work_request(
            instance, tmp_path, "generatekey", {"purpose": "openpgp", "description": "Archive"}
        )
        assert wait_completed(instance, generate)[0] == "success"
        fingerprint, public_key = only_key(signing, "openpgp")
        ((audited_request, actor),) = audit_work_requests(signing, "generate")
        assert audited_request == generate
        assert actor.startswith("worker:")
        # The workspace that asked for the key may use it on the signing side too.
        assert signing.run("grant", "list").stdout == f"openpgp\t{fingerprint}\tSystem\n"

        release = tmp_path / "Release"
        release.write_text("Origin: Test\nSuite: unstable\n")
        token = signer(instance, "signing-openpgp-user", [("openpgp", fingerprint)])
        client, artifact_id = upload_artifact(instance, token, {"Release": release})
        sign = create_work_request(
            instance,
            tmp_path,
            "sign",
            {"purpose": "openpgp", "key": fingerprint, "unsigned": [artifact_id], "mode": "clear"},
            created_by="signing-openpgp-user",
        )
        assert wait_completed(instance, sign)[0] == "success"
        output = download_output(instance, client, sign, tmp_path / "output")
        assert set(output) == {"Release"}
        keyring = tmp_path / "archive.gpg"
        subprocess.run(
            ["gpg", "--dearmor", "--output", str(keyring)], input=public_key, check=True
        )
        checked = subprocess.run(
            ["gpgv", "--status-fd", "1", "--keyring", str(keyring), str(output["Release"])],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stderr
        assert f"[GNUPG:] VALIDSIG {fingerprint}" in checked.stdout
        assert [request for request, _ in audit_work_requests(signing, "sign")] == [sign]
    finally:
        worker.stop()


def test_generate_uefi_key_and_sign_efi_binary_verified_by_sbverify(
    instance: ThrowawayInstance, signing: SigningInstance, tmp_path: Path
) -> None:
    worker = start_worker(instance, signing, tmp_path, "signer-uefi.example")
    try:
        generate = create_work_request(
            instance, tmp_path, "generatekey", {"purpose": "uefi", "description": "Secure Boot"}
        )
        assert wait_completed(instance, generate)[0] == "success"
        fingerprint, certificate = only_key(signing, "uefi")
        binary = build_efi_binary(tmp_path / "grubx64.efi")
        token = signer(instance, "signing-uefi-user", [("uefi", fingerprint)])
        client, artifact_id = upload_artifact(instance, token, {"grubx64.efi": binary})
        sign = create_work_request(
            instance,
            tmp_path,
            "sign",
            {"purpose": "uefi", "key": fingerprint, "unsigned": [artifact_id], "mode": "attached"},
            created_by="signing-uefi-user",
        )
        assert wait_completed(instance, sign)[0] == "success"
        output = download_output(instance, client, sign, tmp_path / "output")
        (tmp_path / "certificate.pem").write_bytes(certificate)
        verified = subprocess.run(
            ["sbverify", "--cert", str(tmp_path / "certificate.pem"), str(output["grubx64.efi"])],
            capture_output=True,
            text=True,
        )
        assert verified.returncode == 0, verified.stderr

        # An input that trusts a certificate outside the worker's allow-list (empty here) is
        # refused before anything is signed.
        _client, trusting = upload_artifact(
            instance, token, {"grubx64.efi": binary}, {"trusted_certs": ["CC" * 32]}
        )
        refused = create_work_request(
            instance,
            tmp_path,
            "sign",
            {"purpose": "uefi", "key": fingerprint, "unsigned": [trusting], "mode": "attached"},
            created_by="signing-uefi-user",
        )
        assert wait_completed(instance, refused)[0] == "failure"
        with psycopg.connect(instance.database_url) as connection:
            outputs = connection.execute(
                "SELECT count(*) FROM db_artifact WHERE created_by_work_request_id = %s",
                (refused,),
            ).fetchone()
        assert outputs == (0,)
        assert [request for request, _ in audit_work_requests(signing, "sign")] == [sign]
        assert "outside DEBUSINE_SIGNING_TRUSTED_CERTS: " + "CC" * 32 in worker.log_text()
    finally:
        worker.stop()


def test_hsm_key_work_goes_only_to_the_worker_holding_it(
    instance: ThrowawayInstance, signing: SigningInstance, tmp_path: Path
) -> None:
    hsm: SoftHsmKey = softhsm_key(tmp_path / "hsm")
    # Registration checks the token: the command sees it. Each worker gets its own below.
    signing.environment.update(hsm.environment)
    registered = signing.run(
        "register_pkcs11_static_key", "uefi", hsm.uri, str(hsm.certificate), "HSM",
        check=True,
    ).stdout.strip()  # fmt: skip
    signing.run("grant", "add", "uefi", registered, "System")
    # Same signing database, but only `holder` sees the token.
    empty = softhsm_key(tmp_path / "other-hsm", label="unrelated")
    holder = start_worker(instance, signing, tmp_path, "hsm-holder.example", hsm.environment)
    other = start_worker(instance, signing, tmp_path, "hsm-less.example", empty.environment)
    try:
        with psycopg.connect(instance.database_url) as connection:
            workers = dict(
                connection.execute(
                    "SELECT name, id FROM db_worker WHERE name LIKE 'hsm-%%'"
                ).fetchall()
            )
        binary = build_efi_binary(tmp_path / "shimx64.efi")
        token = signer(instance, "signing-hsm-user", [("uefi", registered)])
        client, artifact_id = upload_artifact(instance, token, {"shimx64.efi": binary})
        requests = [
            create_work_request(
                instance,
                tmp_path,
                "sign",
                {
                    "purpose": "uefi",
                    "key": registered,
                    "unsigned": [artifact_id],
                    "mode": "attached",
                },
                created_by="signing-hsm-user",
            )
            for _ in range(4)
        ]
        outcomes = [wait_completed(instance, request) for request in requests]
        (holder_id,) = [id_ for name, id_ in workers.items() if name.startswith("hsm-holder")]
        assert len(workers) == 2
        assert outcomes == [("success", holder_id)] * 4
        output = download_output(instance, client, requests[0], tmp_path / "output")
        verified = subprocess.run(
            ["sbverify", "--cert", str(hsm.certificate), str(output["shimx64.efi"])],
            capture_output=True,
            text=True,
        )
        assert verified.returncode == 0, verified.stderr
    finally:
        holder.stop()
        other.stop()


def test_signing_worker_refuses_plain_http_to_a_remote_server(
    signing: SigningInstance, tmp_path: Path
) -> None:
    from debusine.testing.worker import write_worker_config

    config = write_worker_config(tmp_path / "config", "http://debusine.example.org/api")
    result = signing.run("signing_worker", "--config-dir", str(config), check=False)
    assert result.returncode == 2
    assert "is not HTTPS" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def keyring_of(signing: SigningInstance, fingerprint: str, path: Path) -> Path:
    with psycopg.connect(signing.database_url) as connection:
        row = connection.execute(
            "SELECT public_key FROM signing_key WHERE fingerprint = %s", (fingerprint,)
        ).fetchone()
    assert row is not None
    subprocess.run(["gpg", "--dearmor", "--output", str(path)], input=bytes(row[0]), check=True)
    return path


def test_repository_index_signed_by_old_and_new_keys_verifies_with_either(
    instance: ThrowawayInstance, signing: SigningInstance, tmp_path: Path
) -> None:
    old = signing.run("key", "generate", "openpgp", "Archive 2025").stdout.strip()
    new = signing.run("key", "generate", "openpgp", "Archive 2026").stdout.strip()
    worker = start_worker(instance, signing, tmp_path, "signer-index.example")
    try:
        release = tmp_path / "Release"
        release.write_text("Origin: Test\nSuite: stable\nSHA256:\n 0 0 main/Packages\n")
        token = signer(instance, "signing-index-user", [("openpgp", old), ("openpgp", new)])
        client, artifact_id = upload_artifact(instance, token, {"Release": release})
        # The server allows it, but the signing side has granted only the old key to System
        # (defence in depth): refused, nothing signed.
        signing.run("grant", "add", "openpgp", old, "System")
        ungranted = create_work_request(
            instance,
            tmp_path,
            "signrepositoryindex",
            {"keys": [old, new], "unsigned": artifact_id},
            created_by="signing-index-user",
        )
        assert wait_completed(instance, ungranted)[0] == "failure"
        assert (
            f"workspace System has no grant on openpgp key {new} on this signing worker"
            in worker.log_text()
        )
        assert audit_work_requests(signing, "signrepositoryindex") == []
        signing.run("grant", "add", "openpgp", new, "System")
        sign = create_work_request(
            instance,
            tmp_path,
            "signrepositoryindex",
            {"keys": [old, new], "unsigned": artifact_id},
            created_by="signing-index-user",
        )
        assert wait_completed(instance, sign)[0] == "success"
        output = download_output(instance, client, sign, tmp_path / "output")
        assert set(output) == {"InRelease", "Release.gpg"}
        for fingerprint in (old, new):
            keyring = keyring_of(signing, fingerprint, tmp_path / f"{fingerprint}.gpg")
            for signed in ([output["InRelease"]], [output["Release.gpg"], release]):
                checked = subprocess.run(
                    ["gpgv", "--status-fd", "1", "--keyring", str(keyring), *map(str, signed)],
                    capture_output=True,
                    text=True,
                )
                assert f"[GNUPG:] VALIDSIG {fingerprint}" in checked.stdout
        audited = audit_work_requests(signing, "signrepositoryindex")
        # Two outputs, each signed by two keys.
        assert [request for request, _ in audited] == [sign] * 4
    finally:
        worker.stop()


def test_user_without_signer_role_is_refused_and_nothing_is_signed(
    instance: ThrowawayInstance, signing: SigningInstance, tmp_path: Path
) -> None:
    fingerprint = signing.run("key", "generate", "openpgp", "Guarded").stdout.strip()
    worker = start_worker(instance, signing, tmp_path, "signer-guarded.example")
    try:
        signer(instance, "signing-allowed-user", [("openpgp", fingerprint)])
        token = instance.create_contributor("signing-other-user")
        release = tmp_path / "Release"
        release.write_text("Suite: stable\n")
        client, artifact_id = upload_artifact(instance, token, {"Release": release})
        # Through the API: 403, a problem document naming the missing role.
        with pytest.raises(ProblemError) as raised:
            client.work_request_create(
                "sign",
                {"purpose": "openpgp", "key": fingerprint, "unsigned": [artifact_id]},
                workspace="System",
            )
        assert raised.value.status == 403
        assert raised.value.problem["detail"] == (
            f"signing-other-user does not have the signer role on openpgp key {fingerprint}"
            " in workspace System"
        )
        # Through debusine-admin: the same refusal.
        data_file = tmp_path / "sign.yaml"
        data_file.write_text(
            yaml.safe_dump({"purpose": "openpgp", "key": fingerprint, "unsigned": [artifact_id]})
        )
        refused = subprocess.run(
            [
                sys.executable, "-m", "debusine.server.management.main", "work_request",
                "create", "Signing", "sign", "--data", str(data_file),
                "--created-by", "signing-other-user",
            ],
            env=instance.environment, capture_output=True, text=True,
        )  # fmt: skip
        assert refused.returncode == 3
        assert (
            f"Permission denied: signing-other-user does not have the signer role on openpgp key"
            f" {fingerprint} in workspace System"
        ) in refused.stderr
        with psycopg.connect(instance.database_url) as connection:
            count = connection.execute(
                "SELECT count(*) FROM db_workrequest WHERE task_name = 'sign'"
                " AND created_by_id = (SELECT id FROM db_user WHERE username = %s)",
                ("signing-other-user",),
            ).fetchone()
        assert count == (0,)
        assert audit_work_requests(signing, "sign") == []
    finally:
        worker.stop()


def test_debsign_an_upload_verified_by_dscverify(
    instance: ThrowawayInstance, signing: SigningInstance, tmp_path: Path
) -> None:
    from debusine.artifacts.local import upload_from_changes
    from debusine.client.tests.debian_build import build_upload

    fingerprint = signing.run("key", "generate", "openpgp", "Uploader").stdout.strip()
    signing.run("grant", "add", "openpgp", fingerprint, "System")
    worker = start_worker(instance, signing, tmp_path, "signer-debsign.example")
    try:
        token = signer(instance, "signing-debsign-user", [("openpgp", fingerprint)])
        built = build_upload(tmp_path / "upload")
        unsigned = upload_from_changes(built.changes)
        client = DebusineClient(instance.api_url, token)
        files = {name: LocalFile.from_path(path) for name, path in unsigned.files.items()}
        artifact = client.artifact_create(
            "debian:upload", files, unsigned.data_json(), workspace="System"
        )
        client.upload_artifact_files(artifact, files)
        debsign = create_work_request(
            instance,
            tmp_path,
            "debsign",
            {"key": fingerprint, "unsigned": artifact.id},
            created_by="signing-debsign-user",
        )
        assert wait_completed(instance, debsign)[0] == "success"
        with psycopg.connect(instance.database_url) as connection:
            row = connection.execute(
                "SELECT id FROM db_artifact WHERE created_by_work_request_id = %s"
                " AND category = 'debian:upload'",
                (debsign,),
            ).fetchone()
        assert row is not None
        signed = client.artifact_get(row[0])
        assert set(signed.files) == set(unsigned.files)
        output = tmp_path / "signed"
        output.mkdir()
        for name, file in signed.files.items():
            client.download_file(name, file, output / name)
        keyring = keyring_of(signing, fingerprint, tmp_path / "uploader.gpg")
        verified = subprocess.run(
            [
                "dscverify", "--no-default-keyrings", "--keyring", str(keyring),
                str(output / built.changes.name),
            ],
            capture_output=True, text=True,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert [request for request, _ in audit_work_requests(signing, "debsign")] == [debsign]
    finally:
        worker.stop()
