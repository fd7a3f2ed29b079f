"""Database errors as the one-line messages that commands and checks show to people."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (drivers add multi-line detail)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
