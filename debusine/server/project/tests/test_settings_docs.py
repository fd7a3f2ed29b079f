"""Every declared setting is documented for operators in docs/reference/settings.md."""

from __future__ import annotations

from pathlib import Path

from debusine.server.project.settings import defaults

SETTINGS_PAGE = Path(__file__).resolve().parents[4] / "docs" / "reference" / "settings.md"


def test_every_setting_is_in_the_settings_reference() -> None:
    page = SETTINGS_PAGE.read_text()
    declared = [name for name in dir(defaults) if name.isupper()]
    assert declared
    assert [name for name in declared if f"`{name}`" not in page] == []
