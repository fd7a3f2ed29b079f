"""
A loopback TCP proxy that can hold back the requests carrying a given byte string.

The reference worker runs a noop in milliseconds, so a test cannot abort its work request
"while it runs" by timing alone. Put between the worker and the server, this proxy forwards
every byte both ways (HTTP and websockets alike) but, while `hold(marker)` is in force, stops a
client->server stream as soon as it carries `marker` (e.g. `/completed/ HTTP/1.1`): the work
request stays running on the server, and the worker waits for its answer, until `release()`.
Nothing about the worker is changed; it only sees a slow server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

CHUNK_SIZE = 65536


class HoldingProxy:
    """Forward 127.0.0.1:`port` to `upstream_port`; hold client data carrying a marker."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._marker: bytes | None = None
        self._released = threading.Event()
        self._released.set()
        self._held = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold(self, marker: bytes) -> None:
        """From now on, stop any client stream at the first chunk carrying `marker`."""
        self._held.clear()
        self._released.clear()
        self._marker = marker

    def wait_until_held(self, timeout: float) -> bool:
        """Whether a stream carrying the marker arrived (and is held) within `timeout` s."""
        return self._held.wait(timeout)

    def release(self) -> None:
        """Let the held stream (and any later one) through."""
        self._marker = None
        self._released.set()

    def close(self) -> None:
        self.release()
        with self._lock:
            self._closed = True
            sockets = [self._listener, *self._sockets]
        for sock in sockets:
            # (Not connected, or already shut down by the peer: nothing left to do.)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> HoldingProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, False), daemon=True
            ).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        # The end of the previous chunk, so that a marker split across two reads is still seen.
        tail = b""
        try:
            while chunk := source.recv(CHUNK_SIZE):
                marker = self._marker
                if from_client and marker is not None and marker in tail + chunk:
                    self._held.set()
                    self._released.wait()
                tail = chunk[-len(marker) :] if marker else b""
                target.sendall(chunk)
        except OSError:
            pass  # either side went away: the other direction notices and ends too
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)
