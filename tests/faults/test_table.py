"""The fault table is whole: every row names a test that exists, every injector has a row."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.faults.table import FAULTS, MATRIX
from tests.faults.test_process_faults import INJECTORS

CHECKOUT = Path(__file__).resolve().parents[2]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_every_row_names_an_existing_test() -> None:
    for fault in FAULTS:
        path, name = fault.test.split("::")
        assert name in defined_tests(CHECKOUT / path), f"{fault.name}: no test {fault.test}"


def test_rows_are_unique_and_every_matrix_row_has_an_injector() -> None:
    names = [fault.name for fault in FAULTS]
    assert len(names) == len(set(names))
    assert {fault.name for fault in FAULTS if fault.test == MATRIX} == set(INJECTORS)
