"""
A pytest plugin that fails a run in which a test was skipped for a reason nobody listed.

CI runs the whole suite on a machine that has everything the tests need, so a skip there means
a test that silently stopped running (a tool, a file, a user went missing). With
`--fail-on-skip` (what `make test`, hence `.ci/run`, passes) a run with such a skip ends with
exit status 1 even when every test that ran passed. Either way the summary lists every skip
with its reason, marked allowed or unexpected.

A skip is allowed when a line of the `allowed_skips` ini option (`[tool.pytest.ini_options]`
in pyproject.toml) matches it: `NODE-ID-GLOB :: REASON-SUBSTRING`, e.g.
`tests/test_x.py::test_y[*] :: needs a GPU` (in the glob only `*` is special, matching
anything). List only skips whose reason holds on CI's machine,
and say why in a comment next to the line. An expected failure (`xfail`) is not a skip.

Load it with `-p debusine.testing.skip_guard`; the root conftest.py loads it too, so that the
summary and the ini option exist in every run. Under pytest-xdist it acts in the controller,
which receives every worker's reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

OPTION = "--fail-on-skip"
INI_NAME = "allowed_skips"
SEPARATOR = "::"


@dataclass(frozen=True)
class AllowedSkip:
    """One line of `allowed_skips`."""

    node_id_glob: str
    reason: str

    @classmethod
    def parse(cls, line: str) -> AllowedSkip:
        """`NODE-ID-GLOB :: REASON-SUBSTRING` (the glob may contain `::` itself)."""
        glob, separator, reason = line.rpartition(f" {SEPARATOR} ")
        if not separator or not glob.strip() or not reason.strip():
            raise pytest.UsageError(
                f"{INI_NAME}: {line!r} is not `NODE-ID-GLOB {SEPARATOR} REASON-SUBSTRING`"
            )
        return cls(glob.strip(), reason.strip())

    def matches(self, node_id: str, reason: str) -> bool:
        # Only `*` is special: node IDs of parametrized tests hold brackets.
        pattern = ".*".join(re.escape(part) for part in self.node_id_glob.split("*"))
        return re.fullmatch(pattern, node_id) is not None and self.reason in reason


@dataclass(frozen=True)
class Skip:
    """A test (or a collected module) that was skipped."""

    node_id: str
    reason: str
    allowed_by: AllowedSkip | None


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report gives (`Skipped: ` left out)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
    else:
        text = str(longrepr)
    return text.removeprefix("Skipped: ")


class SkipGuard:
    """Collects the skips of a run, prints them and decides whether they fail it."""

    def __init__(self, allowed: list[AllowedSkip], *, fail: bool) -> None:
        self.allowed = allowed
        self.fail = fail
        self.skips: list[Skip] = []

    def record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = skip_reason(report)
        allowed_by = next(
            (allowed for allowed in self.allowed if allowed.matches(report.nodeid, reason)),
            None,
        )
        self.skips.append(Skip(report.nodeid, reason, allowed_by))

    @property
    def unexpected(self) -> list[Skip]:
        return [skip for skip in self.skips if skip.allowed_by is None]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.record(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Only a run that would otherwise pass becomes a failure: a failed run, or one that
        # collected nothing, keeps its own status.
        if self.fail and self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.skips:
            return
        terminalreporter.section(f"skips ({len(self.skips)})")
        for skip in self.skips:
            verdict = (
                "unexpected"
                if skip.allowed_by is None
                else f"allowed by `{skip.allowed_by.node_id_glob} {SEPARATOR} "
                f"{skip.allowed_by.reason}`"
            )
            terminalreporter.write_line(f"{skip.node_id}: {skip.reason} [{verdict}]")
        unexpected = len(self.unexpected)
        if unexpected and self.fail:
            terminalreporter.write_line(
                f"{unexpected} unexpected skip(s): this run fails ({OPTION}; list a skip "
                f"whose reason holds on CI in `{INI_NAME}` to allow it)",
                red=True,
                bold=True,
            )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        OPTION,
        action="store_true",
        default=False,
        help=f"fail the run when a test is skipped for a reason not listed in `{INI_NAME}` "
        "(what `make test` and CI do)",
    )
    parser.addini(
        INI_NAME,
        type="linelist",
        default=[],
        help=f"skips {OPTION} accepts, one per line: NODE-ID-GLOB {SEPARATOR} REASON-SUBSTRING",
    )


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # an xdist worker: its reports reach the controller, which judges them
    allowed = [AllowedSkip.parse(line) for line in config.getini(INI_NAME) if line.strip()]
    config.pluginmanager.register(
        SkipGuard(allowed, fail=bool(config.getoption(OPTION))), "debusine-skip-guard"
    )
