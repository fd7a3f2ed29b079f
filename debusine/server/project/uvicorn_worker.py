"""The gunicorn worker class that serves the ASGI application (`--worker-class` of the server)."""

from typing import Any

from uvicorn.workers import UvicornWorker


class DebusineUvicornWorker(UvicornWorker):
    """
    uvicorn's gunicorn worker, configured for Django.

    Django's ASGI application does not implement the lifespan protocol: probing it only logs a
    misleading "unsupported" line per worker at every start.
    """

    CONFIG_KWARGS: dict[str, Any] = {**UvicornWorker.CONFIG_KWARGS, "lifespan": "off"}
