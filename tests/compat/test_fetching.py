"""How the reference client is fetched: what a run sees when Debian's archive cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from debusine.testing.processes import free_port
from debusine.testing.reference_client import (
    CLIENT_VERSION,
    PINNED_PACKAGES,
    ReferenceClientError,
    reference_client,
    reference_worker,
)

pytestmark = pytest.mark.compat


def test_unreachable_archive_fails_with_a_clear_message(tmp_path: Path) -> None:
    # Nothing listens on a free port: every fetch is refused at once.
    archive = f"http://127.0.0.1:{free_port()}/debian"

    with pytest.raises(ReferenceClientError) as raised:
        reference_client(cache=tmp_path, archive_url=archive)

    message = str(raised.value)
    assert "update failed" in message
    assert f"Is {archive} reachable" in message
    # Nothing half-fetched is left under the version's name for the next run to trust.
    assert not (tmp_path / CLIENT_VERSION).exists()


def test_cached_client_is_used_without_network(tmp_path: Path) -> None:
    cached = tmp_path / CLIENT_VERSION
    (cached / "root").mkdir(parents=True)
    (cached / "packages.txt").write_text(
        "".join(f"{name} {CLIENT_VERSION}\n" for name in PINNED_PACKAGES)
    )

    # An unreachable archive does not matter: the cache is complete.
    client = reference_client(cache=tmp_path, archive_url="http://127.0.0.1:9/debian")
    worker = reference_worker(cache=tmp_path, archive_url="http://127.0.0.1:9/debian")

    assert client.root == worker.root == cached / "root"
    assert client.version == worker.version == CLIENT_VERSION
    assert worker.script == cached / "root" / "usr" / "bin" / "debusine-worker"


def test_cache_without_the_worker_is_fetched_again(tmp_path: Path) -> None:
    # A cache filled before the worker joined the fetch lists the client alone.
    cached = tmp_path / CLIENT_VERSION
    (cached / "root").mkdir(parents=True)
    (cached / "packages.txt").write_text(f"debusine-client {CLIENT_VERSION}\n")
    archive = f"http://127.0.0.1:{free_port()}/debian"

    with pytest.raises(ReferenceClientError, match="update failed"):
        reference_worker(cache=tmp_path, archive_url=archive)
