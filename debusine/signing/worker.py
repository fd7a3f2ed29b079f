"""
The signing worker: the external worker's daemon (same registration, websocket, get-next and
completion) with worker type `signing`, running signing tasks with keys from the signing
database.

It differs from `debusine-worker` in what it reports and runs: its metadata names the keys it
can use (`signing:keys`, so that the scheduler routes a key's work only to workers that hold
it), and it runs `Signing` tasks in its own process (a thread of it), since they need the
signing database, instead of forking task processes. It insists on HTTPS to the server unless
the server is on a loopback address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import platform
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from django.db import close_old_connections, connection

from debusine.artifacts.local import LocalArtifactError, upload_from_changes
from debusine.client.errors import ClientError
from debusine.client.uploads import LocalFile
from debusine.protocol.work_requests import LenientWorkRequestResponse
from debusine.protocol.workers import OutputData, OutputDataError, WorkRequestCompletedRequest
from debusine.signing import config
from debusine.signing.key_store import KeyStoreError, check_granted, generate_key, grant_key
from debusine.signing.models import AuditEvent, Key, KeyPurpose
from debusine.signing.operations import debsign_changes, sign_file
from debusine.signing.pkcs11_keys import Pkcs11Error, check_token_holds_key
from debusine.signing.policy import PolicyError, check_trusted_certs
from debusine.signing.service_keys import NaclProtectedKey, ServiceKey, ServiceKeyError
from debusine.signing.signers import SigningError, SigningMode
from debusine.tasks import BaseTask, TaskContext, TaskType
from debusine.tasks.base import task_version_metadata
from debusine.tasks.signing import (
    SIGNING_KEYS_METADATA,
    Debsign,
    GenerateKey,
    Sign,
    SignRepositoryIndex,
    key_reference,
)
from debusine.worker.config import ConfigError, WorkerConfig
from debusine.worker.daemon import CurrentWorkRequest, WorkerDaemon, error_completion

logger = logging.getLogger("debusine.signing.worker")

SIGNING_OUTPUT_CATEGORY = "debusine:signing-output"


def check_server_url(api_url: str) -> None:
    """Refuse a server reached without TLS, unless it is on this machine (loopback)."""
    parts = urlsplit(api_url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"api-url {api_url} is not HTTPS: a signing worker talks to a remote server over"
            " HTTPS only"
        )


def usable_key_references(service_keys: Sequence[ServiceKey]) -> list[str]:
    """`purpose:fingerprint` of every enabled key this worker can sign with."""
    openable = {service_key.public_key_b64 for service_key in service_keys}
    references: list[str] = []
    for key in Key.objects.filter(disabled_at__isnull=True).order_by("purpose", "fingerprint"):
        protected = key.protected
        if isinstance(protected, NaclProtectedKey):
            usable = protected.public_key in openable
        else:
            try:
                check_token_holds_key(
                    protected.pkcs11_uri, config.pkcs11_module(), bytes(key.public_key)
                )
                usable = True
            except Pkcs11Error as error:
                logger.debug("key %s is not usable here: %s", key, error)
                usable = False
        if usable:
            references.append(key_reference(key.purpose, key.fingerprint))
    return references


def signing_metadata(service_keys: Sequence[ServiceKey]) -> dict[str, Any]:
    """What a signing worker reports: its type, signing task versions, tools and keys."""
    metadata: dict[str, Any] = {
        "system:worker_type": "signing",
        "system:cpu_count": os.cpu_count() or 1,
        "system:host_architecture": platform.machine(),
        "sbsign:available": shutil.which("sbsign") is not None,
        "gpg:available": shutil.which("gpg") is not None,
    }
    metadata.update(
        {
            name: version
            for name, version in task_version_metadata().items()
            if name.startswith("signing:")
        }
    )
    try:
        metadata[SIGNING_KEYS_METADATA] = usable_key_references(service_keys)
    finally:
        connection.close()
    return metadata


def signed_name(name: str, purpose: KeyPurpose, mode: SigningMode) -> str:
    """The name of the signed file of `name` in the output artifact."""
    if mode == SigningMode.DETACHED:
        suffixes = {KeyPurpose.UEFI: "sig", KeyPurpose.KMOD: "p7s", KeyPurpose.OPENPGP: "asc"}
        return f"{name}.{suffixes[purpose]}"
    return name


class SigningWorkerDaemon(WorkerDaemon):
    """A worker of type `signing`: runs Signing tasks with the keys of its database."""

    WORKER_TYPE: Literal["external", "signing"] = "signing"

    def __init__(self, worker_config: WorkerConfig, service_keys: Sequence[ServiceKey]) -> None:
        super().__init__(worker_config)
        self.service_keys = list(service_keys)
        self.actor = f"worker:{socket.getfqdn()}"

    def dynamic_metadata(self) -> dict[str, Any]:
        return signing_metadata(self.service_keys)

    async def _run(
        self, work_request: LenientWorkRequestResponse, current: CurrentWorkRequest
    ) -> WorkRequestCompletedRequest | None:
        prepared = self._prepare(work_request, TaskType.SIGNING)
        if isinstance(prepared, WorkRequestCompletedRequest):
            return prepared
        task, context = prepared
        try:
            completion = await asyncio.to_thread(self._execute, task, context)
        finally:
            shutil.rmtree(context.directory, ignore_errors=True)
        if isinstance(task, GenerateKey) and completion.result == "success":
            # A new key: tell the scheduler this worker can sign with it from now on.
            self._spawn(self._send_dynamic_metadata())
        return completion

    def _execute(self, task: BaseTask[Any], context: TaskContext) -> WorkRequestCompletedRequest:
        """Run one signing task (in a thread, with its own database connection)."""
        close_old_connections()
        try:
            if isinstance(task, GenerateKey):
                key = generate_key(
                    KeyPurpose(task.data.purpose),
                    task.data.description,
                    created_by=self.actor,
                    service_keys=self.service_keys,
                    work_request_id=context.work_request_id,
                )
                # The workspace that asked for it may use it, here too.
                grant_key(
                    KeyPurpose(key.purpose),
                    key.fingerprint,
                    context.workspace,
                    created_by=self.actor,
                )
                logger.info("work request %d: generated %s", context.work_request_id, key)
            elif isinstance(task, Sign):
                self._sign(task, context)
            elif isinstance(task, Debsign):
                self._debsign(task, context)
            elif isinstance(task, SignRepositoryIndex):
                self._sign_repository_index(task, context)
            else:
                return error_completion("setup-failed", f"{task.TASK_NAME} is not supported yet")
        except (KeyStoreError, ServiceKeyError, SigningError, PolicyError, ClientError) as error:
            logger.warning("work request %d failed: %s", context.work_request_id, error)
            return WorkRequestCompletedRequest(
                result="failure",
                output_data=OutputData(
                    errors=[OutputDataError(code="execute-failed", message=str(error))]
                ),
            )
        finally:
            connection.close()
        return WorkRequestCompletedRequest(result="success")

    def _sign(self, task: Sign, context: TaskContext) -> None:
        """Download the unsigned files, sign each, upload a signing-output artifact."""
        client = context.client()
        purpose = KeyPurpose(task.data.purpose)
        mode = SigningMode(task.data.mode)
        outputs: dict[str, LocalFile] = {}
        results: list[dict[str, str]] = []
        check_granted(purpose, [task.data.key], context.workspace)
        artifacts = [client.artifact_get(artifact_id) for artifact_id in task.data.unsigned]
        for artifact in artifacts:
            # Before any file is signed: one refused input signs nothing.
            check_trusted_certs(artifact.data.get("trusted_certs") or [], config.trusted_certs())
        for artifact in artifacts:
            artifact_id = artifact.id
            for name, file in sorted(artifact.files.items()):
                source = context.input_directory / str(artifact_id) / name
                source.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(name, file, source)
                output_name = signed_name(name, purpose, mode)
                output = context.execute_directory / output_name
                output.parent.mkdir(parents=True, exist_ok=True)
                sign_file(
                    purpose,
                    [task.data.key],
                    source,
                    output,
                    mode,
                    created_by=self.actor,
                    service_keys=self.service_keys,
                    work_request_id=context.work_request_id,
                    event=AuditEvent.SIGN,
                )
                outputs[output_name] = LocalFile.from_path(output)
                results.append({"file": name, "output_file": output_name})
        created = client.artifact_create(
            SIGNING_OUTPUT_CATEGORY,
            outputs,
            {
                "purpose": purpose.value,
                "fingerprint": task.data.key,
                "mode": mode.value,
                "results": results,
            },
            workspace=context.workspace,
            work_request=context.work_request_id,
        )
        client.upload_artifact_files(created, outputs)

    def _sign_repository_index(self, task: SignRepositoryIndex, context: TaskContext) -> None:
        """Sign the artifact's Release file into InRelease and/or Release.gpg."""
        check_granted(KeyPurpose.OPENPGP, task.data.keys, context.workspace)
        client = context.client()
        artifact = client.artifact_get(task.data.unsigned)
        if "Release" not in artifact.files:
            raise SigningError(f"artifact {task.data.unsigned} has no Release file")
        source = context.input_directory / "Release"
        client.download_file("Release", artifact.files["Release"], source)
        outputs: dict[str, LocalFile] = {}
        for name in task.data.outputs:
            mode = SigningMode.CLEAR if name == "InRelease" else SigningMode.DETACHED
            output = context.execute_directory / name
            sign_file(
                KeyPurpose.OPENPGP,
                task.data.keys,
                source,
                output,
                mode,
                created_by=self.actor,
                service_keys=self.service_keys,
                work_request_id=context.work_request_id,
                event=AuditEvent.SIGN_REPOSITORY_INDEX,
            )
            outputs[name] = LocalFile.from_path(output)
        created = client.artifact_create(
            SIGNING_OUTPUT_CATEGORY,
            outputs,
            {"purpose": "openpgp", "fingerprints": task.data.keys, "results": sorted(outputs)},
            workspace=context.workspace,
            work_request=context.work_request_id,
        )
        client.upload_artifact_files(created, outputs)

    def _debsign(self, task: Debsign, context: TaskContext) -> None:
        """Download the upload, debsign it, upload the signed upload as a new artifact."""
        check_granted(KeyPurpose.OPENPGP, [task.data.key], context.workspace)
        client = context.client()
        artifact = client.artifact_get(task.data.unsigned)
        changes_names = [name for name in artifact.files if name.endswith(".changes")]
        if artifact.category != "debian:upload" or len(changes_names) != 1:
            raise SigningError(f"artifact {task.data.unsigned} is not a debian:upload")
        directory = context.execute_directory
        for name, file in sorted(artifact.files.items()):
            client.download_file(name, file, directory / name)
        changes = directory / changes_names[0]
        debsign_changes(
            task.data.key,
            changes,
            created_by=self.actor,
            service_keys=self.service_keys,
            work_request_id=context.work_request_id,
        )
        try:
            signed = upload_from_changes(changes)
        except LocalArtifactError as error:
            raise SigningError(f"the signed upload does not check out: {error}") from error
        files = {name: LocalFile.from_path(path) for name, path in signed.files.items()}
        created = client.artifact_create(
            str(signed.category),
            files,
            signed.data_json(),
            workspace=context.workspace,
            work_request=context.work_request_id,
        )
        client.upload_artifact_files(created, files)


def default_config_dir() -> Path:
    """Where the signing worker's config.ini, token and activation token live by default."""
    return Path("/etc/debusine/signing")
