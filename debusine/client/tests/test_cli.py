"""Argument and local-input handling of the `debusine` command (no server needed)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from debusine.client.cli import files_to_offer, main, read_yaml_mapping
from debusine.client.errors import UsageError


def test_yaml_mapping_from_stdin_and_file(tmp_path: Path) -> None:
    assert read_yaml_mapping("-", "task data", io.StringIO("result: true\n")) == {"result": True}
    path = tmp_path / "data.yaml"
    path.write_text("{}")
    assert read_yaml_mapping(str(path), "task data", io.StringIO()) == {}


@pytest.mark.parametrize(
    ("text", "message"), [("", "empty"), ("- 1\n", "mapping"), ("a: [\n", "not valid YAML")]
)
def test_bad_yaml_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        read_yaml_mapping("-", "task data", io.StringIO(text))


def test_artifact_paths_relative_to_the_base_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("bb")

    files = files_to_offer([str(tmp_path / "sub" / "a.txt"), str(tmp_path / "b.txt")], None)
    assert sorted(files) == ["a.txt", "b.txt"]
    files = files_to_offer([str(tmp_path / "sub" / "a.txt")], str(tmp_path))
    assert list(files) == ["sub/a.txt"]
    assert files["sub/a.txt"].size == 1


def test_offering_bad_files(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    for directory in ("one", "two"):
        (tmp_path / directory / "same.txt").write_text(directory)
    with pytest.raises(UsageError, match="same artifact path"):
        files_to_offer([str(tmp_path / "one/same.txt"), str(tmp_path / "two/same.txt")], None)
    with pytest.raises(UsageError, match="is not inside"):
        files_to_offer([str(tmp_path / "one/same.txt")], str(tmp_path / "two"))
    with pytest.raises(UsageError, match="no such file"):
        files_to_offer([str(tmp_path / "absent")], None)


def test_configuration_errors_exit_with_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--config-file", str(tmp_path / "none.ini"), "show-artifact", "1"])

    assert code == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("debusine: error: configuration file")
    assert captured.err.count("\n") == 1


def test_bad_arguments_exit_with_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["show-artifact", "0"])
    assert exit_info.value.code == 2


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from debusine.client.cli import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    for name in subparsers.choices:  # type: ignore[union-attr]
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: debusine" in capsys.readouterr().out


#: A real file whose reads fail with EIO (offset 0 of our own memory is never mapped).
UNREADABLE = "/proc/self/mem"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of `debusine ARGV` (the configuration is never reached)."""
    code = main(argv)
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["create-artifact", "debusine:test", "--upload", UNREADABLE], "Input/output error"),
        (["create-artifact", "debusine:test", "--data", UNREADABLE], "Input/output error"),
        (["create-work-request", "noop", "--data", UNREADABLE], "Input/output error"),
        (["create-workflow", "template", "--data", UNREADABLE], "Input/output error"),
        (["create-artifact", "debusine:test", "--upload", "DIR"], "is a directory"),
        (["create-work-request", "noop", "--data", "DIR"], "Is a directory"),
        (["import-debian-artifact", "DIR/unreadable.dsc"], "Input/output error"),
    ],
)
def test_unreadable_local_input_is_one_line_and_exit_2(
    arguments: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "unreadable.dsc").symlink_to(UNREADABLE)
    argv = [argument.replace("DIR", str(tmp_path)) for argument in arguments]
    code, error = run_cli(["--config-file", str(tmp_path / "none.ini"), *argv], capsys)
    assert code == 2
    assert error.startswith("debusine: error: ")
    assert message in error
    assert error.count("\n") == 1


def test_a_read_error_while_sending_is_not_a_connection_error(tmp_path: Path) -> None:
    from debusine.client.errors import LocalFileError
    from debusine.client.uploads import _Slice

    with Path(UNREADABLE).open("rb") as contents, pytest.raises(LocalFileError) as raised:
        next(iter(_Slice(contents, 10, lambda _n: None, Path(UNREADABLE))))
    assert not isinstance(raised.value, OSError)
    assert str(raised.value) == f"cannot read {UNREADABLE}: Input/output error"


def test_a_cursor_that_cannot_be_written_stops_the_listener(tmp_path: Path) -> None:
    from debusine.client.completion_listener import write_cursor
    from debusine.client.errors import LocalFileError

    with pytest.raises(LocalFileError, match=r"cannot write .*No such file or directory"):
        write_cursor(tmp_path / "missing" / "cursor.json", "2025-01-01T00:00:00Z")


def test_any_other_os_error_is_still_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The last resort of main(): an OSError no handler turned into a message of its own.
    from debusine.client import debian_artifacts

    def failing_prepare(path: Path) -> None:
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(debian_artifacts, "prepare", failing_prepare)
    code, error = run_cli(["import-debian-artifact", str(tmp_path / "x.dsc")], capsys)
    assert code == 2
    assert error == f"debusine: error: {tmp_path / 'x.dsc'}: Input/output error\n"
