"""What the real server process writes to its log."""

from __future__ import annotations

import pytest

from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.integration


def test_workers_start_without_lifespan_noise(debusine_server: LiveServer) -> None:
    # uvicorn's stock worker probes Django for the ASGI lifespan protocol and logs
    # "ASGI 'lifespan' protocol appears unsupported." per worker: DebusineUvicornWorker does not.
    log = debusine_server.instance.log.read_text()
    assert "Booting worker" in log  # the log is the server's, and the workers have started
    assert "lifespan" not in log
