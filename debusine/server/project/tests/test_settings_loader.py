"""Tests of setting overrides from the TOML file and the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from debusine.server.project import instance
from debusine.server.project.settings_loader import SettingsError, apply_overrides

DEFAULTS: dict[str, Any] = {
    "DEBUG": False,
    "ALLOWED_HOSTS": [],
    "DEBUSINE_DATA_DIR": Path(),
    "DEBUSINE_WORK_REQUEST_PAGE_SIZE": 10,
    "DEBUSINE_FQDN": "localhost",
}


def load(environ: dict[str, str], tmp_path: Path, toml: str | None = None) -> dict[str, Any]:
    settings_file = tmp_path / "settings.toml"
    if toml is not None:
        settings_file.write_text(toml)
    namespace = dict(DEFAULTS)
    apply_overrides(namespace, DEFAULTS, {"DEBUSINE_SETTINGS_FILE": str(settings_file), **environ})
    return namespace


def test_defaults_apply_without_overrides(tmp_path: Path) -> None:
    assert load({}, tmp_path) == DEFAULTS


def test_environment_converts_to_the_type_of_the_default(tmp_path: Path) -> None:
    loaded = load(
        {
            "DEBUSINE_DEBUG": "yes",
            "DEBUSINE_ALLOWED_HOSTS": "a.example, b.example",
            "DEBUSINE_DATA_DIR": "/srv/debusine",
            "DEBUSINE_WORK_REQUEST_PAGE_SIZE": "25",
        },
        tmp_path,
    )
    assert loaded["DEBUG"] is True
    assert loaded["ALLOWED_HOSTS"] == ["a.example", "b.example"]
    assert loaded["DEBUSINE_DATA_DIR"] == Path("/srv/debusine")
    assert loaded["DEBUSINE_WORK_REQUEST_PAGE_SIZE"] == 25


def test_environment_wins_over_file(tmp_path: Path) -> None:
    toml = 'DEBUSINE_FQDN = "from-file.example"\nDEBUSINE_WORK_REQUEST_PAGE_SIZE = 50\n'
    loaded = load({"DEBUSINE_FQDN": "from-env.example"}, tmp_path, toml)
    assert loaded["DEBUSINE_FQDN"] == "from-env.example"
    assert loaded["DEBUSINE_WORK_REQUEST_PAGE_SIZE"] == 50


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DEBUSINE_DEBUG": "maybe"}, "DEBUG"),
        ({"DEBUSINE_WORK_REQUEST_PAGE_SIZE": "ten"}, "DEBUSINE_WORK_REQUEST_PAGE_SIZE"),
    ],
)
def test_bad_values_fail_loudly(environ: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=message):
        load(environ, tmp_path)


def test_unknown_setting_in_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DEBUSINE_TYPO"):
        load({}, tmp_path, 'DEBUSINE_TYPO = "x"\n')


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load({}, tmp_path, "not toml at all = = =")


def test_database_url_parsing() -> None:
    params = instance.parse_database_url("postgresql://deb:s%40cret@db.example:5433/debusine")
    assert (params.user, params.password, params.host, params.port, params.name) == (
        "deb",
        "s@cret",
        "db.example",
        "5433",
        "debusine",
    )
    socket = instance.parse_database_url("postgresql:///debusine?host=/run/postgresql")
    assert (socket.host, socket.name, socket.options) == ("/run/postgresql", "debusine", {})
    with pytest.raises(ValueError, match="postgresql://"):
        instance.parse_database_url("mysql://localhost/debusine")
    with pytest.raises(ValueError, match="names no database"):
        instance.parse_database_url("postgresql://localhost/")


def test_recorded_urls_are_used_unless_configured(tmp_path: Path) -> None:
    (tmp_path / instance.DATABASE_URL_FILE).write_text("postgresql:///recorded\n")
    assert (
        instance.resolve_url("", tmp_path, instance.DATABASE_URL_FILE, "default")
        == "postgresql:///recorded"
    )
    assert (
        instance.resolve_url("postgresql:///configured", tmp_path, instance.DATABASE_URL_FILE, "d")
        == "postgresql:///configured"
    )
    assert instance.resolve_url("", tmp_path / "none", instance.REDIS_URL_FILE, "d") == "d"
