"""
Helpers shared by the tests that run Debian tasks end to end (our worker in
tests/integration/test_debian_pipeline.py, Debian's 0.11.3 worker in
tests/compat/test_reference_worker_debian.py): the bookworm build environment, kept under
/var/cache/debusine-tests between runs, and the source packages the tests build.

`provide_environment` files a bookworm system tarball in `debian@debian:environments`: the
tarball kept by an earlier run (a week at most) is uploaded and filed with
`debusine-admin environment add`; otherwise `environment create` bootstraps one with the
`mmdebstrap` task (a worker must be running) and the result is kept for the next runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from debusine.artifacts.local import LocalArtifact, source_package_from_dsc, system_tarball
from debusine.artifacts.models import DebianSystemTarball
from debusine.client.client import DebusineClient, LocalFile
from debusine.tasks.mmdebstrap import OUTPUT_FILENAME as MMDEBSTRAP_OUTPUT
from debusine.tasks.tests.packages import make_source_package
from debusine.testing.environments import KEPT_FOR, PIPELINE_ENVIRONMENT
from debusine.testing.throwaway import ThrowawayInstance
from tests.integration.rest_user import RestUser

CODENAME = "bookworm"
ARCHITECTURE = "amd64"
ENVIRONMENT = f"debian/match:codename={CODENAME}"
#: Where the bootstrapped environment is kept between runs (the Debian tasks' tests make
#: their zstd tarball from it when it is recent: debusine.testing.environments).
KEPT_ENVIRONMENT = PIPELINE_ENVIRONMENT
#: The unprivileged user workers run as (sbuild in unshare mode refuses root).
WORKER_USER = "debusine-worker"

BOOTSTRAP_TIMEOUT = 600
TASK_TIMEOUT = 300

#: Name of the source package `make_sources` builds successfully, and of its binaries.
GOOD_SOURCE = "hello-debusine"
GOOD_BINARIES = ["hello-debusine", "hello-debusine-data"]


def upload(client: DebusineClient, artifact: LocalArtifact) -> int:
    """Create `artifact` in the System workspace as the client's user; return its id."""
    files = {name: LocalFile.from_path(path) for name, path in artifact.files.items()}
    created = client.artifact_create(
        artifact.category.value, files, artifact.data_json(), workspace="System"
    )
    client.upload_artifact_files(created, files)
    return created.id


def artifacts_by_category(
    client: DebusineClient, work_request: dict[str, Any]
) -> dict[str, list[Any]]:
    """The artifacts a work request produced, by category."""
    found: dict[str, list[Any]] = {}
    for artifact_id in work_request["artifacts"]:
        artifact = client.artifact_get(artifact_id)
        found.setdefault(artifact.category, []).append(artifact)
    return found


def kept_environment() -> tuple[Path, dict[str, Any]] | None:
    """
    The tarball kept by an earlier run and its data, if there is a recent one made as the
    mmdebstrap task makes them now (same file name, hence compression).
    """
    data_file = KEPT_ENVIRONMENT / "data.json"
    try:
        data = json.loads(data_file.read_text())
        tarball = KEPT_ENVIRONMENT / data["filename"]
        if (
            data["filename"] == MMDEBSTRAP_OUTPUT
            and time.time() - data_file.stat().st_mtime < KEPT_FOR
            and tarball.is_file()
        ):
            return tarball, data
    except (OSError, ValueError, KeyError):
        pass
    return None


def keep_environment(client: DebusineClient, artifact_id: int) -> None:
    """Download the bootstrapped tarball into the cache, for the next runs."""
    artifact = client.artifact_get(artifact_id)
    staging = KEPT_ENVIRONMENT.with_name(KEPT_ENVIRONMENT.name + f".new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, file in artifact.files.items():
        client.download_file(name, file, staging / name)
    (staging / "data.json").write_text(json.dumps(artifact.data))
    shutil.rmtree(KEPT_ENVIRONMENT, ignore_errors=True)
    staging.rename(KEPT_ENVIRONMENT)


def provide_environment(
    instance: ThrowawayInstance, rest: RestUser, client: DebusineClient
) -> int:
    """
    File a bookworm system tarball in debian@debian:environments (the kept one, else one
    bootstrapped now by a running worker); return its artifact id.
    """
    kept = kept_environment()
    if kept is not None:
        tarball, data = kept
        artifact_id = upload(
            client, system_tarball(tarball, DebianSystemTarball.model_validate(data))
        )
        assert instance.admin("environment", "add", str(artifact_id)).strip() == (
            f"tarball:{CODENAME}:{ARCHITECTURE}"
        )
    else:
        work_request_id = int(
            instance.admin("environment", "create", CODENAME, "--architecture", ARCHITECTURE)
        )
        done = rest.wait_until(work_request_id, "completed", timeout=BOOTSTRAP_TIMEOUT)
        assert done["result"] == "success", done
        tarballs = artifacts_by_category(client, done)["debian:system-tarball"]
        assert len(tarballs) == 1
        artifact_id = tarballs[0].id
        assert tarballs[0].data["codename"] == CODENAME
        assert tarballs[0].data["architecture"] == ARCHITECTURE
        assert "sbuild" not in tarballs[0].data["pkglist"]
        assert "build-essential" in tarballs[0].data["pkglist"]
        keep_environment(client, artifact_id)
    listed = yaml.safe_load(instance.admin("environment", "list", "--yaml"))
    assert [(item["name"], item["artifact"]) for item in listed] == [
        (f"tarball:{CODENAME}:{ARCHITECTURE}", artifact_id)
    ]
    return artifact_id


def make_sources(directory: Path, client: DebusineClient) -> dict[str, int]:
    """
    Upload two source packages written under `directory`: "good" (`GOOD_SOURCE`, with an
    autopkgtest) builds, "bad" fails to build; return their artifact ids.
    """
    good = make_source_package(directory / "good", with_autopkgtest=True)
    bad = make_source_package(directory / "bad", name="broken-debusine", fail_build=True)
    return {
        "good": upload(client, source_package_from_dsc(good)),
        "bad": upload(client, source_package_from_dsc(bad)),
    }
