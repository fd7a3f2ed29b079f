"""
Work request statuses and results as SQL literals, for the statements of the fast paths.

Statements name statuses through these (built from the protocol's enumerations), never as
string literals of their own, so that the enumerations stay the one list of states.
"""

from __future__ import annotations

from enum import StrEnum

from debusine.protocol.work_requests import WorkRequestResult, WorkRequestStatus


def literal(value: StrEnum) -> str:
    """`value` as an SQL string literal (enumeration values hold no quotes)."""
    assert "'" not in value.value
    return f"'{value.value}'"


def literals(*values: StrEnum) -> str:
    """A parenthesised list of SQL string literals, for `IN`."""
    return "(" + ", ".join(literal(value) for value in values) + ")"


PENDING = literal(WorkRequestStatus.PENDING)
RUNNING = literal(WorkRequestStatus.RUNNING)
COMPLETED = literal(WorkRequestStatus.COMPLETED)
#: Work requests that hold their worker: assigned (pending) or running.
HELD = literals(WorkRequestStatus.PENDING, WorkRequestStatus.RUNNING)
SUCCESS = literal(WorkRequestResult.SUCCESS)
#: Results of work requests that failed (their `on_failure` reactions run).
FAILED = literals(WorkRequestResult.FAILURE, WorkRequestResult.ERROR)
