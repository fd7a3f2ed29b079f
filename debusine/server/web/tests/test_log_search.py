"""The log search's line matching: its ASCII fast path finds what a line-by-line scan finds."""

from __future__ import annotations

import random

import pytest

from debusine.server.web.log_search import matching_lines


def line_by_line(text: str, folded: str) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if folded in line.casefold()]


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("compiling\nerror: missing foo.h\ndone\nERROR again", "error"),
        ("no match here\n", "error"),
        ("error at the end", "error"),
        ("\n\nerror\n\n", "error"),
        ("progress 10%\rprogress 20%\nError\r\n", "error"),  # other line ends: slow path
        ("Straße\nSTRASSE\n", "ss"),  # not ASCII: casefolding changes lengths
        ("ascii only\n", "é"),
    ],
)
def test_matching_lines_number_lines_as_splitlines_does(text: str, query: str) -> None:
    folded = query.casefold()
    assert list(matching_lines(text, folded)) == line_by_line(text, folded)


def test_matching_lines_agree_with_a_line_by_line_scan_on_random_logs() -> None:
    generator = random.Random(18)
    pieces = ["a", "E", "r", "o", "\n", "\n", "x", "Error", "ERR", "é", "\r", "\r\n", "ß"]
    for round_number in range(2000):
        alphabet = pieces[:9] if round_number % 2 else pieces
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 60)))
        for query in ("err", "error", "a", "é", "ss"):
            folded = query.casefold()
            assert list(matching_lines(text, folded)) == line_by_line(text, folded), text
