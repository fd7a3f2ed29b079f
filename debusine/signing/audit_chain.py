"""
The audit log's hash chain, Django-free.

Each audit row stores the hash of the row before it and its own hash, computed over that
previous hash and the row's content in a canonical JSON form. Editing a row changes its hash;
removing one breaks the link of the next: `debusine-signing audit verify` finds both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: `previous_hash` of the first row.
GENESIS_HASH = "0" * 64


def row_hash(previous_hash: str, content: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the previous row's hash and this row's content."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{previous_hash}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class ChainedRow:
    """One stored audit row as the chain sees it."""

    id: int
    previous_hash: str
    row_hash: str
    content: Mapping[str, Any]


def chain_problems(rows: Iterable[ChainedRow]) -> list[str]:
    """Every inconsistency of the chain `rows` (in insertion order), one line each."""
    problems: list[str] = []
    expected_previous = GENESIS_HASH
    for row in rows:
        if row.previous_hash != expected_previous:
            problems.append(
                f"row {row.id}: previous hash does not match the row before it"
                " (a row was removed or edited)"
            )
        if row_hash(row.previous_hash, row.content) != row.row_hash:
            problems.append(f"row {row.id}: content does not match its hash (the row was edited)")
        expected_previous = row.row_hash
    return problems
