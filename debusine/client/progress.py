"""
Progress bars for uploads and downloads: rich bars on a terminal, nothing when piped or silent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Called with the number of bytes just transferred.
Advance = Callable[[int], None]


def _ignore(_transferred: int) -> None:
    return None


class TransferProgress:
    """Shows one bar per file transferred when enabled; otherwise does nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stderr(cls, *, silent: bool) -> TransferProgress:
        """Bars only when a person watches: stderr is a terminal and `-s` was not given."""
        return cls(enabled=not silent and sys.stderr.isatty())

    @contextmanager
    def track(self, description: str, total: int) -> Iterator[Advance]:
        if not self.enabled:
            yield _ignore
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task(description, total=total)

            def advance(transferred: int) -> None:
                progress.advance(task, transferred)

            yield advance


#: For library users who want no output at all.
NO_PROGRESS = TransferProgress(enabled=False)
