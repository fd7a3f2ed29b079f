"""Tests of the worker configuration: directories, config.ini, token files, exit statuses."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from debusine.worker.cli import main
from debusine.worker.config import (
    ConfigError,
    check_api_url,
    find_config_dir,
    generate_token,
    load_config,
    read_secret,
    write_token,
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`main()` configures the root logger; leave it as it was for other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def write_config(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.ini").write_text(text)
    return directory


def test_explicit_config_dir_must_exist(tmp_path: Path) -> None:
    assert find_config_dir(tmp_path) == tmp_path
    with pytest.raises(ConfigError, match="does not exist"):
        find_config_dir(tmp_path / "missing")


def test_user_config_dir_is_found_before_the_system_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    user_dir = tmp_path / ".config" / "debusine" / "worker"
    if Path("/etc/debusine/worker").is_dir():  # pragma: no cover - depends on the machine
        pytest.skip("/etc/debusine/worker exists on this machine")
    with pytest.raises(ConfigError, match="no configuration directory"):
        find_config_dir()
    user_dir.mkdir(parents=True)
    assert find_config_dir() == user_dir


def test_config_values_and_command_line_overrides(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        "[General]\napi-url = https://debusine.example.org/api/\n"
        "log-file = /var/log/w.log\nlog-level = debug\n",
    )
    config = load_config(tmp_path)
    assert config.api_url == "https://debusine.example.org/api"
    assert config.websocket_url == "wss://debusine.example.org/api/ws/1.0/worker/connect/"
    assert config.log_file == Path("/var/log/w.log")
    assert config.log_level == "DEBUG"
    overridden = load_config(tmp_path, log_file=tmp_path / "x.log", log_level="error")
    assert (overridden.log_file, overridden.log_level) == (tmp_path / "x.log", "ERROR")
    assert config.token_path == tmp_path / "token"
    assert config.activation_token_path == tmp_path / "activation-token"


def test_defaults_and_plain_http_websocket(tmp_path: Path) -> None:
    write_config(tmp_path, "[General]\napi-url = http://127.0.0.1:8000/api\n")
    config = load_config(tmp_path)
    assert config.websocket_url == "ws://127.0.0.1:8000/api/ws/1.0/worker/connect/"
    assert (config.log_file, config.log_level) == (None, "INFO")
    assert config.cache_dir == Path.home() / ".cache" / "debusine" / "worker"


def test_cache_dir_absolute_relative_and_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value, expected in [
        ("/var/cache/debusine-worker", Path("/var/cache/debusine-worker")),
        ("cache", tmp_path / "cache"),
        ("~/worker-cache", tmp_path / "home" / "worker-cache"),
    ]:
        write_config(tmp_path, f"[General]\napi-url = http://x/api\ncache-dir = {value}\n")
        assert load_config(tmp_path).cache_dir == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "does not exist"),
        ("api-url = http://x/api\n", "cannot read"),
        ("[Other]\napi-url = http://x/api\n", r"no \[General\] section"),
        ("[General]\nlog-level = INFO\n", "api-url is required"),
        ("[General]\napi-url = ftp://x/api\n", "not an http:// or https:// URL"),
        ("[General]\napi-url = localhost/api\n", "not an http:// or https:// URL"),
        ("[General]\napi-url = http:///api\n", "not an http:// or https:// URL"),
        ("[General]\napi-url = http://x/api?a=b\n", "query or a fragment"),
        ("[General]\napi-url = http://x/api\nlog-level = LOUD\n", "log-level 'LOUD'"),
    ],
)
def test_bad_configurations_are_refused(tmp_path: Path, text: str | None, message: str) -> None:
    if text is not None:
        write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_check_api_url_keeps_good_urls() -> None:
    assert check_api_url(" https://h:8443/deb/api ") == "https://h:8443/deb/api"


def test_secrets_must_be_private_and_not_empty(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert read_secret(path) is None
    path.write_text("abc\n")
    path.chmod(0o600)
    assert read_secret(path) == "abc"
    for mode in (0o640, 0o604, 0o610, 0o620):
        path.chmod(mode)
        with pytest.raises(ConfigError, match="accessible by group or others"):
            read_secret(path)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret(path)


def test_write_token_is_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    write_config(tmp_path, "[General]\napi-url = http://x/api\n")
    config = load_config(tmp_path)
    token = generate_token()
    assert len(token) == 64
    assert set(token) <= set("0123456789abcdef")
    old_umask = os.umask(0)
    try:
        write_token(config, token)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(config.token_path.stat().st_mode) == 0o600
    assert read_secret(config.token_path) == token
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.ini", "token"]


def test_cli_exit_status_3_with_one_line_for_bad_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config-dir", str(tmp_path / "missing")]) == 3
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("debusine-worker: error: configuration directory")

    write_config(tmp_path, "[General]\napi-url = http://127.0.0.1:9/api\n")
    (tmp_path / "activation-token").write_text("secret\n")
    (tmp_path / "activation-token").chmod(0o644)
    assert main(["--config-dir", str(tmp_path)]) == 3
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "activation-token is accessible by group or others" in error
    # Nothing was written: the worker did not go on to register.
    assert not (tmp_path / "token").exists()


def test_cli_exit_status_2_for_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--log-level", "chatty"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["--no-such-option"])
    assert caught.value.code == 2


def test_cli_exit_status_3_when_the_server_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    write_config(tmp_path, "[General]\napi-url = http://127.0.0.1:9/api\n")
    log = tmp_path / "worker.log"
    assert main(["--config-dir", str(tmp_path), "--log-file", str(log)]) == 3
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "cannot register with the server" in error
    assert "cannot register with the server" in log.read_text()
    assert not (tmp_path / "token").exists()
