"""
Signing tasks: their data and where they may run, Django-free.

The server validates and schedules them like any task; only signing workers
(`debusine-signing signing_worker`) run them, with keys from their own database
(`debusine.signing.worker`). A signing worker reports, in `signing:keys`, the
`<purpose>:<fingerprint>` of every key it can use: software keys its service key opens, and
PKCS#11 keys its token holds. A task naming a key goes only to workers that report it, so a
key held in one worker's HSM is only ever routed to that worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import MaxLen, MinLen
from pydantic import Field

from debusine.tasks.base import BaseTask, TaskData
from debusine.tasks.models import MAX_ITEMS, BaseTaskData, DatabaseId, TaskType

#: Worker metadata key: the keys a signing worker can sign with, as `purpose:fingerprint`.
SIGNING_KEYS_METADATA = "signing:keys"

KeyPurposeName = Literal["uefi", "openpgp", "kmod"]


def key_reference(purpose: str, fingerprint: str) -> str:
    """How `signing:keys` names a key."""
    return f"{purpose}:{fingerprint}"


class GenerateKeyData(BaseTaskData):
    """Data of `generatekey`."""

    purpose: KeyPurposeName
    #: OpenPGP user ID, or the X.509 certificate's common name (uefi, kmod).
    description: str = Field(min_length=1, max_length=255)


class SignData(BaseTaskData):
    """Data of `sign`: sign every file of the `unsigned` artifacts with one key."""

    purpose: KeyPurposeName
    #: Fingerprint of the key (as `debusine-signing key list` shows it).
    key: str = Field(min_length=8, max_length=64)
    #: IDs of the artifacts whose files to sign.
    unsigned: list[DatabaseId] = Field(min_length=1, max_length=MAX_ITEMS)
    #: uefi: attached or detached; kmod: attached (signature appended to the module, as the
    #: kernel loads it) or detached (the PKCS#7 `.p7s`); openpgp: detached or clear.
    mode: Literal["attached", "detached", "clear"] = "detached"


class SignRepositoryIndexData(BaseTaskData):
    """
    Data of `signrepositoryindex`: sign a suite's `Release` file with one or more OpenPGP keys
    (several during a key rollover: each key adds its signature).
    """

    #: Fingerprints of the OpenPGP keys to sign with.
    keys: list[Annotated[str, MinLen(8), MaxLen(64)]] = Field(min_length=1, max_length=16)
    #: ID of the artifact holding the `Release` file.
    unsigned: DatabaseId
    #: Which signed forms to make: `InRelease` (clear), `Release.gpg` (detached), or both.
    outputs: list[Literal["InRelease", "Release.gpg"]] = Field(
        default=["InRelease", "Release.gpg"], min_length=1, max_length=2
    )


class DebsignData(BaseTaskData):
    """Data of `debsign`: sign a `debian:upload` (its .changes, .dsc and .buildinfo)."""

    #: Fingerprint of the OpenPGP key.
    key: str = Field(min_length=8, max_length=64)
    #: ID of the `debian:upload` artifact.
    unsigned: DatabaseId


class SigningTask(BaseTask[TaskData], abstract=True):
    """Signing tasks run on signing workers only; `run` is theirs (debusine.signing.worker)."""

    def run(self, execute_directory: Path) -> bool:
        raise NotImplementedError("signing tasks run on signing workers")


class GenerateKey(
    SigningTask[GenerateKeyData], task_type=TaskType.SIGNING, name="generatekey", version=1
):
    """Generate a software key (sealed in the signing database) and audit it."""


class Sign(SigningTask[SignData], task_type=TaskType.SIGNING, name="sign", version=1):
    """Sign the files of `unsigned` into a `debusine:signing-output` artifact."""

    def can_run_on(self, worker_metadata: Mapping[str, Any]) -> bool:
        return key_reference(self.data.purpose, self.data.key) in worker_metadata.get(
            SIGNING_KEYS_METADATA, []
        )


class SignRepositoryIndex(
    SigningTask[SignRepositoryIndexData],
    task_type=TaskType.SIGNING,
    name="signrepositoryindex",
    version=1,
):
    """Make `InRelease` and/or `Release.gpg` from a `Release` file."""

    def can_run_on(self, worker_metadata: Mapping[str, Any]) -> bool:
        usable = worker_metadata.get(SIGNING_KEYS_METADATA, [])
        return all(key_reference("openpgp", key) in usable for key in self.data.keys)


class Debsign(SigningTask[DebsignData], task_type=TaskType.SIGNING, name="debsign", version=1):
    """Sign an upload with debsign into a new `debian:upload` artifact."""

    def can_run_on(self, worker_metadata: Mapping[str, Any]) -> bool:
        return key_reference("openpgp", self.data.key) in worker_metadata.get(
            SIGNING_KEYS_METADATA, []
        )
