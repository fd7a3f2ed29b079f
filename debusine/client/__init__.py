"""
The `debusine` command-line client and the Python client class it is built on.

Speaks the Debusine REST/websocket API 1.0 (protocol.md) with `requests`, so it works against
our server and against Debusine's own. Never imports Django.
"""

from debusine.client.client import DebusineClient
from debusine.client.errors import ClientError, ProblemError

__all__ = ["ClientError", "DebusineClient", "ProblemError"]
