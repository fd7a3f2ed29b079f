"""Reading, choosing and writing servers in the client configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from debusine.client.config import ServerConfig, read_config, select_server, write_server
from debusine.client.errors import ConfigError

SERVER = ServerConfig(
    name="main", api_url="https://debusine.example.org/api/", scope="debian", token="a" * 64
)


def test_written_file_is_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "client" / "config.ini"

    write_server(path, SERVER, make_default=False)

    assert path.stat().st_mode & 0o777 == 0o600
    selected = select_server(read_config(path), path)
    assert selected == ServerConfig("main", "https://debusine.example.org/api", "debian", "a" * 64)


def test_second_server_becomes_default_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    write_server(path, SERVER, make_default=False)
    other = ServerConfig("other", "http://localhost:8000/api", "debusine", None)

    write_server(path, other, make_default=False)
    assert select_server(read_config(path), path).name == "main"
    write_server(path, other, make_default=True)
    assert select_server(read_config(path), path).name == "other"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_file_accessible_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "config.ini"
    write_server(path, SERVER, make_default=True)
    path.chmod(mode)

    with pytest.raises(ConfigError, match="chmod 600"):
        read_config(path)


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="debusine setup"):
        read_config(tmp_path / "absent.ini")


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_selection_by_name_by_fqdn_and_scope_override(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "config.ini",
        "[General]\ndefault-server = a\n"
        "[server:a]\napi-url = https://a.example/api\nscope = one\ntoken = t\n"
        "[server:b]\napi-url = https://b.example/api\nscope = two\n",
    )
    parser = read_config(path)

    assert select_server(parser, path).name == "a"
    assert select_server(parser, path, "b").token is None
    assert select_server(parser, path, "b.example/two").name == "b"
    assert select_server(parser, path, "a", scope="three").scope == "three"
    with pytest.raises(ConfigError, match="no server in"):
        select_server(parser, path, "b.example/one")
    with pytest.raises(ConfigError, match="known servers: a, b"):
        select_server(parser, path, "c")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server:a]\napi-url = https://a/api\nscope = s\n", "default-server"),
        ("[General]\ndefault-server = a\n[server:a]\nscope = s\n", "no api-url"),
        ("[General]\ndefault-server = a\n[server:a]\napi-url = ftp://a\nscope = s\n", "http"),
        (
            "[General]\ndefault-server = a\n[server:a]\napi-url = http://a\nscope = s\nx = 1\n",
            "unknown key",
        ),
        ("not an ini file", "invalid"),
    ],
)
def test_bad_configurations(tmp_path: Path, text: str, message: str) -> None:
    path = write_config(tmp_path / "config.ini", text)
    with pytest.raises(ConfigError, match=message):
        select_server(read_config(path), path)
