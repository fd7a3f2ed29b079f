"""The audit log's hash chain (Django-free)."""

from __future__ import annotations

from dataclasses import replace

from debusine.signing.audit_chain import GENESIS_HASH, ChainedRow, chain_problems, row_hash


def make_chain(count: int) -> list[ChainedRow]:
    rows: list[ChainedRow] = []
    previous = GENESIS_HASH
    for index in range(1, count + 1):
        content = {"event": "sign", "fingerprint": f"F{index}", "data": {"files": {"a": "1"}}}
        current = row_hash(previous, content)
        rows.append(ChainedRow(index, previous, current, content))
        previous = current
    return rows


def test_intact_chain_has_no_problem() -> None:
    assert chain_problems(make_chain(4)) == []


def test_hash_covers_content_and_previous_hash() -> None:
    content = {"event": "sign", "data": {"x": 1}}
    assert row_hash(GENESIS_HASH, content) == row_hash(
        GENESIS_HASH, dict(reversed(content.items()))
    )
    assert row_hash(GENESIS_HASH, content) != row_hash("1" * 64, content)
    assert row_hash(GENESIS_HASH, content) != row_hash(GENESIS_HASH, {**content, "data": {"x": 2}})


def test_edited_row_is_found() -> None:
    rows = make_chain(3)
    rows[1] = replace(rows[1], content={**rows[1].content, "fingerprint": "EVIL"})
    assert chain_problems(rows) == ["row 2: content does not match its hash (the row was edited)"]


def test_removed_row_is_found() -> None:
    rows = make_chain(3)
    del rows[1]
    assert chain_problems(rows) == [
        "row 3: previous hash does not match the row before it (a row was removed or edited)"
    ]


def test_rehashed_edit_breaks_the_next_link() -> None:
    rows = make_chain(3)
    content = {**rows[1].content, "fingerprint": "EVIL"}
    rows[1] = replace(rows[1], content=content, row_hash=row_hash(rows[1].previous_hash, content))
    assert chain_problems(rows) == [
        "row 3: previous hash does not match the row before it (a row was removed or edited)"
    ]
