"""The gunicorn worker class that serves the ASGI application (`--worker-class` of the server)."""

from typing import Any

from uvicorn.workers import UvicornWorker

from debusine.server.project.parent_death import stop_when_parent_dies


class DebusineUvicornWorker(UvicornWorker):
    """
    uvicorn's gunicorn worker, configured for Django, that stops when the gunicorn master dies.

    Django's ASGI application does not implement the lifespan protocol: probing it only logs a
    misleading "unsupported" line per worker at every start.

    uvicorn's worker never checks that its master is still alive: a master killed with SIGKILL
    would leave it serving on the port. It asks Linux for a SIGTERM when the master dies,
    once gunicorn has switched to the configured user (which clears that request).

    Forwarded headers are left to Django (debusine.server.project.forwarded), which believes
    them only from DEBUSINE_TRUSTED_PROXIES: uvicorn's own handling would rewrite the client
    address before Django could tell which peer sent them.
    """

    CONFIG_KWARGS: dict[str, Any] = {
        **UvicornWorker.CONFIG_KWARGS,
        "lifespan": "off",
        "proxy_headers": False,
    }

    def init_signals(self) -> None:
        """Install the signal handlers, then ask for SIGTERM when the master dies."""
        super().init_signals()
        stop_when_parent_dies(self.ppid)
