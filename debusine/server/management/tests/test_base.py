"""Tests of the helpers shared by the debusine-admin commands."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from debusine.server.management.base import (
    dump_yaml,
    format_table,
    read_yaml,
    split_scoped_name,
    validation_message,
)


def test_format_table_aligns_columns() -> None:
    table = format_table(
        ["NAME", "ENABLED", "SEEN"],
        [
            ["a-long-name", True, datetime(2024, 5, 1, 12, 30, tzinfo=UTC)],
            ["b", False, None],
        ],
    )

    assert table == (
        "NAME         ENABLED  SEEN\n"
        "a-long-name  yes      2024-05-01 12:30:00\n"
        "b            no       -\n"
    )


def test_dump_yaml_is_plain_data() -> None:
    text = dump_yaml(
        {"at": datetime(2024, 5, 1, tzinfo=UTC), "delay": timedelta(minutes=1), "items": (1, 2)}
    )

    assert yaml.safe_load(text) == {"at": "2024-05-01T00:00:00Z", "delay": 60.0, "items": [1, 2]}


def test_read_yaml_from_stdin_and_errors() -> None:
    assert read_yaml("-", io.StringIO("a: 1")) == {"a": 1}
    with pytest.raises(CommandError) as failure:
        read_yaml("-", io.StringIO("a: [1"))
    assert failure.value.returncode == 3
    assert "\n" not in str(failure.value)


def test_split_scoped_name(db: None) -> None:
    assert split_scoped_name("debusine/System", "workspace")[1] == "System"
    assert split_scoped_name("System", "workspace")[0].name == "debusine"


def test_validation_message_names_fields() -> None:
    error = ValidationError({"name": ["is bad."], "__all__": ["overall problem"]})

    assert validation_message(error) == "name: is bad.; overall problem"
    assert validation_message(ValidationError("plain")) == "plain"
