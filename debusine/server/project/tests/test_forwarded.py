"""Forwarded headers count only from DEBUSINE_TRUSTED_PROXIES."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory

from debusine.server.project.forwarded import (
    ForwardedHeadersMiddleware,
    TrustedProxies,
    TrustedProxiesError,
    forwarded_client,
)
from debusine.testing.playground import FileSpec, Playground


def test_parse_addresses_networks_and_the_unix_socket() -> None:
    trusted = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "fd00::/8", "unix"])
    assert trusted.unix_socket
    assert trusted.trusts("127.0.0.1")
    assert trusted.trusts("10.20.30.40")
    assert trusted.trusts("fd12::1")
    assert trusted.trusts(None)
    assert trusted.trusts("")
    assert not trusted.trusts("127.0.0.2")
    assert not trusted.trusts("203.0.113.7")
    assert not trusted.trusts("not an address")


def test_without_unix_a_socket_peer_is_not_trusted() -> None:
    assert not TrustedProxies.parse(["127.0.0.1"]).trusts(None)
    assert not TrustedProxies.parse([]).trusts("127.0.0.1")


def test_bad_entry_is_refused_with_its_name() -> None:
    with pytest.raises(TrustedProxiesError, match=r"'proxy\.example\.org'"):
        TrustedProxies.parse(["127.0.0.1", "proxy.example.org"])


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("198.51.100.1, 203.0.113.7", "203.0.113.7"),
        (" 2001:db8::1 ", "2001:db8::1"),
        ("203.0.113.7, garbage", None),
        ("", None),
    ],
)
def test_the_client_is_the_last_forwarded_entry(header: str, client: str | None) -> None:
    assert forwarded_client(header) == client


def seen_by_view(settings: Any, **meta: str) -> dict[str, Any]:
    """The request's META as the view sees it after the middleware."""
    seen: dict[str, Any] = {}

    def view(request: HttpRequest) -> HttpResponse:
        seen.update(request.META)
        return HttpResponse()

    ForwardedHeadersMiddleware(view)(RequestFactory().get("/", **meta))  # type: ignore[arg-type]
    return seen


FORWARDED = {
    "HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.7",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_HOST": "debusine.example.org",
    "HTTP_FORWARDED": "for=198.51.100.1",
}


def test_headers_from_a_trusted_proxy_are_kept(settings: Any) -> None:
    settings.DEBUSINE_TRUSTED_PROXIES = ["192.0.2.0/24"]
    meta = seen_by_view(settings, REMOTE_ADDR="192.0.2.10", **FORWARDED)
    assert meta["REMOTE_ADDR"] == "203.0.113.7"
    assert meta["HTTP_X_FORWARDED_PROTO"] == "https"


def test_headers_from_anyone_else_are_dropped(settings: Any) -> None:
    settings.DEBUSINE_TRUSTED_PROXIES = ["192.0.2.0/24"]
    meta = seen_by_view(settings, REMOTE_ADDR="203.0.113.99", **FORWARDED)
    assert meta["REMOTE_ADDR"] == "203.0.113.99"
    assert not set(FORWARDED) & set(meta)


def test_a_unix_socket_peer_is_trusted_by_default(settings: Any) -> None:
    meta = seen_by_view(settings, REMOTE_ADDR="", **FORWARDED)
    assert meta["REMOTE_ADDR"] == "203.0.113.7"
    assert meta["HTTP_X_FORWARDED_PROTO"] == "https"


def test_untrusted_peer_cannot_make_urls_https(settings: Any, playground: Playground) -> None:
    artifact = playground.create_artifact(files=[FileSpec("f", b"x")])
    url = f"/api/1.0/artifact/{artifact.pk}/"
    token = playground.create_user_token(playground.create_user())

    trusted = Client(REMOTE_ADDR="127.0.0.1", HTTP_TOKEN=token).get(
        url, HTTP_X_FORWARDED_PROTO="https", HTTP_HOST="localhost"
    )
    assert trusted.json()["download_tar_gz_url"].startswith("https://localhost/")

    settings.DEBUSINE_TRUSTED_PROXIES = ["192.0.2.1"]
    untrusted = Client(REMOTE_ADDR="127.0.0.1", HTTP_TOKEN=token).get(
        url, HTTP_X_FORWARDED_PROTO="https", HTTP_HOST="localhost"
    )
    assert untrusted.json()["download_tar_gz_url"].startswith("http://localhost/")
