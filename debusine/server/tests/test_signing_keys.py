"""Who may create Signing work requests: the signer role on the key's asset."""

from __future__ import annotations

import pytest

from debusine.server.db.models import User, WorkRequest
from debusine.server.scheduler.passes import run_scheduling_pass
from debusine.server.signing_keys import grant_signer, register_signing_key
from debusine.server.work_requests import transitions
from debusine.tasks.signing import SIGNING_KEYS_METADATA, key_reference
from debusine.testing.playground import Playground

FINGERPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"


def create_sign(playground: Playground, user: User, key: str = FINGERPRINT) -> WorkRequest:
    return transitions.create(
        workspace=playground.workspace,
        created_by=user,
        task_type="Signing",
        task_name="sign",
        task_data={"purpose": "openpgp", "key": key, "unsigned": [1], "mode": "clear"},
    )


def test_signer_may_create_a_sign_work_request(playground: Playground, user: User) -> None:
    asset = register_signing_key("openpgp", FINGERPRINT, "Archive", playground.workspace)
    grant_signer(asset, playground.workspace, playground.create_group("signers", [user]))
    work_request = create_sign(playground, user)
    assert work_request.task_data["key"] == FINGERPRINT


def test_user_without_signer_role_is_refused_and_nothing_is_stored(
    playground: Playground, user: User
) -> None:
    asset = register_signing_key("openpgp", FINGERPRINT, "Archive", playground.workspace)
    other = playground.create_user("bob")
    grant_signer(asset, playground.workspace, playground.create_group("signers", [other]))
    with pytest.raises(transitions.WorkRequestPermissionError) as raised:
        create_sign(playground, user)
    assert raised.value.title == "Permission denied"
    assert raised.value.detail == (
        f"alice does not have the signer role on openpgp key {FINGERPRINT}"
        f" in workspace {playground.workspace.name}"
    )
    assert not WorkRequest.objects.filter(task_type="Signing").exists()


def test_signer_role_is_per_workspace(playground: Playground, user: User) -> None:
    asset = register_signing_key("openpgp", FINGERPRINT, "Archive", playground.workspace)
    elsewhere = playground.create_workspace("elsewhere")
    grant_signer(asset, elsewhere, playground.create_group("signers", [user]))
    with pytest.raises(transitions.WorkRequestPermissionError, match="signer role"):
        create_sign(playground, user)


def test_unknown_key_is_refused(playground: Playground, user: User) -> None:
    with pytest.raises(transitions.WorkRequestPermissionError, match="no openpgp signing key"):
        create_sign(playground, user, key="F" * 40)


def test_repository_index_needs_the_role_on_every_key(playground: Playground, user: User) -> None:
    signers = playground.create_group("signers", [user])
    old = register_signing_key("openpgp", "A" * 40, "Old", None)
    register_signing_key("openpgp", "B" * 40, "New", None)
    grant_signer(old, playground.workspace, signers)
    data = {"keys": ["A" * 40, "B" * 40], "unsigned": 1}

    def create() -> WorkRequest:
        return transitions.create(
            workspace=playground.workspace,
            created_by=user,
            task_type="Signing",
            task_name="signrepositoryindex",
            task_data=data,
        )

    with pytest.raises(transitions.WorkRequestPermissionError, match="B" * 40):
        create()
    grant_signer(
        register_signing_key("openpgp", "B" * 40, "New", None), playground.workspace, signers
    )
    assert create().task_name == "signrepositoryindex"


def test_generatekey_needs_no_key(playground: Playground, user: User) -> None:
    work_request = transitions.create(
        workspace=playground.workspace,
        created_by=user,
        task_type="Signing",
        task_name="generatekey",
        task_data={"purpose": "uefi", "description": "New"},
    )
    assert work_request.task_name == "generatekey"


def test_signer_role_revoked_while_pending_ends_the_work_request_at_assignment(
    playground: Playground, user: User
) -> None:
    asset = register_signing_key("openpgp", FINGERPRINT, "Archive", playground.workspace)
    signers = playground.create_group("signers", [user])
    grant_signer(asset, playground.workspace, signers)
    revoked = create_sign(playground, user)
    kept_user = playground.create_user("carol")
    grant_signer(asset, playground.workspace, playground.create_group("others", [kept_user]))
    kept = create_sign(playground, kept_user)
    # Revoked between creation and assignment: leaving the group is enough.
    signers.memberships.filter(user=user).delete()
    worker = playground.create_connected_worker(
        "signer",
        worker_type="signing",
        metadata={
            "signing:sign:version": 1,
            SIGNING_KEYS_METADATA: [key_reference("openpgp", FINGERPRINT)],
        },
    )

    result = run_scheduling_pass()

    revoked.refresh_from_db()
    assert (revoked.status, revoked.result, revoked.worker) == ("completed", "error", None)
    assert revoked.output_data_json is not None
    [error] = revoked.output_data_json["errors"]
    assert error["code"] == "permission-denied"
    assert "alice does not have the signer role" in error["message"]
    assert result.failed == [revoked.pk]
    # The worker stayed free for the next signer's work request.
    assert result.assigned == [(kept.pk, worker.pk)]
