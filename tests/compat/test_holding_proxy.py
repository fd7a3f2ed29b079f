"""The loopback proxy of the abort test: it forwards both ways and holds marked streams."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.compat.holding_proxy import HoldingProxy

pytestmark = pytest.mark.compat


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback server that sends back, upper-cased, whatever each connection sends."""
    listener = socket.create_server(("127.0.0.1", 0))

    def echo(connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(4096):
                connection.sendall(data.upper())

    def serve() -> None:
        while True:
            try:
                connection, _address = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        return connection.recv(4096)


def test_forwards_both_ways(echo_port: int) -> None:
    with HoldingProxy(echo_port) as proxy:
        assert exchange(proxy.port, b"get /x") == b"GET /X"


def test_holds_a_marked_stream_until_released(echo_port: int) -> None:
    with HoldingProxy(echo_port) as proxy:
        proxy.hold(b"/completed/")
        answers: list[bytes] = []
        sender = threading.Thread(
            target=lambda: answers.append(exchange(proxy.port, b"put /1/completed/"))
        )
        sender.start()

        assert proxy.wait_until_held(timeout=5)
        # Other streams still pass while one is held.
        assert exchange(proxy.port, b"get /2/") == b"GET /2/"
        sender.join(0.5)
        assert answers == []

        proxy.release()
        sender.join(5)
        assert answers == [b"PUT /1/COMPLETED/"]


def test_a_marker_split_across_reads_is_still_seen(echo_port: int) -> None:
    with HoldingProxy(echo_port) as proxy:
        proxy.hold(b"/completed/")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as connection:
            connection.sendall(b"put /1/comp")
            assert connection.recv(4096) == b"PUT /1/COMP"
            connection.sendall(b"leted/")
            assert proxy.wait_until_held(timeout=5)
            proxy.release()
            assert connection.recv(4096) == b"LETED/"
