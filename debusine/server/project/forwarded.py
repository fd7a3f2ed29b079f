"""
Forwarded headers believed only from the configured reverse proxies (DEBUSINE_TRUSTED_PROXIES).

`X-Forwarded-Proto` decides whether a request is secure (absolute URLs, secure cookies) and
`X-Forwarded-For` names the client (token failure limits, logs): anyone can send them, so they
count only when the connection comes from a trusted proxy. From any other peer the middleware
removes them before anything reads them; from a trusted one it takes the client address from
the last `X-Forwarded-For` entry (the one the proxy appended: earlier entries are whatever the
client sent). A proxy connected to the server's Unix socket has no address: `unix` in the list
trusts it.

uvicorn's own handling of these headers is off (DebusineUvicornWorker): this is the only one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from debusine.server.project.settings_loader import SettingsError

#: The request headers (as META keys) only trusted proxies may set.
FORWARDED_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_FORWARDED",
)

UNIX_SOCKET = "unix"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxiesError(SettingsError):
    """An entry of DEBUSINE_TRUSTED_PROXIES is neither an address, a network nor `unix`."""


@dataclass(frozen=True)
class TrustedProxies:
    """The parsed DEBUSINE_TRUSTED_PROXIES."""

    networks: tuple[Network, ...]
    unix_socket: bool

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        networks: list[Network] = []
        unix_socket = False
        for entry in entries:
            if entry.strip().lower() == UNIX_SOCKET:
                unix_socket = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise TrustedProxiesError(
                    f"invalid entry in DEBUSINE_TRUSTED_PROXIES: {entry!r} (expected an IP "
                    f"address, a network such as 10.0.0.0/8, or {UNIX_SOCKET!r})"
                ) from None
        return cls(tuple(networks), unix_socket)

    def trusts(self, peer: str | None) -> bool:
        """Whether the connection's peer address (None or "" over a Unix socket) is trusted."""
        if not peer:
            return self.unix_socket
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def forwarded_client(header: str) -> str | None:
    """The address the trusted proxy appended to `X-Forwarded-For` (its last entry)."""
    last = header.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None


class ForwardedHeadersMiddleware:
    """Drop forwarded headers from untrusted peers; take the client address from trusted ones."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.trusted = TrustedProxies.parse(settings.DEBUSINE_TRUSTED_PROXIES)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        if self.trusted.trusts(meta.get("REMOTE_ADDR")):
            client = forwarded_client(meta.get("HTTP_X_FORWARDED_FOR", ""))
            if client is not None:
                meta["REMOTE_ADDR"] = client
        else:
            for header in FORWARDED_HEADERS:
                meta.pop(header, None)
        return self.get_response(request)
