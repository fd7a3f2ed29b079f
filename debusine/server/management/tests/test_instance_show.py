"""Tests of `debusine-admin instance show`."""

from __future__ import annotations

import yaml
from django.conf import settings
from django.test import override_settings

from debusine.server.management.commands.instance import redacted
from debusine.server.management.tests.helpers import run


def test_info_names_what_the_web_server_and_clients_need(db: None) -> None:
    out = run("instance", "show")

    assert "Store directory:" in out
    assert str(settings.DEBUSINE_STORE_DIRECTORY) in out
    assert str(settings.DEBUSINE_UPLOAD_DIRECTORY) in out
    assert f"Default scope:                    {settings.DEBUSINE_DEFAULT_SCOPE}\n" in out
    assert settings.DATABASES["default"]["NAME"] in out


@override_settings(
    DEBUSINE_FQDN="debusine.example.org",
    ALLOWED_HOSTS=["debusine.example.org", "localhost", "debusine.example.org"],
    DEBUSINE_REDIS_URL="redis://:s3cret@redis.example.org:6379/0",
)
def test_info_yaml_hides_passwords(db: None) -> None:
    info = yaml.safe_load(run("instance", "show", "--yaml"))

    assert info["api_url"] == "https://debusine.example.org/api"
    assert info["allowed_hosts"] == ["debusine.example.org", "localhost"]
    assert info["redis_url"] == "redis://:***@redis.example.org:6379/0"
    assert set(info["database"]) == {"host", "port", "name", "user"}
    assert info["default_workspace"] == settings.DEBUSINE_DEFAULT_WORKSPACE


def test_local_server_is_plain_http() -> None:
    with override_settings(DEBUSINE_FQDN="localhost"):
        from debusine.server.management.commands.instance import api_url

        assert api_url() == "http://localhost/api"
    assert redacted("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"
