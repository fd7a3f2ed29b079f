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
