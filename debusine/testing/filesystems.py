"""
Small filesystems that fill up, for tests of what happens when a disk is full.

`small_filesystem(directory, size)` mounts a tmpfs of `size` bytes on `directory` for the
duration of a block (and `resize` changes its size, as an operator freeing space would). Mounting
needs root (CAP_SYS_ADMIN), which the test environment has; without it the error says so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class FilesystemError(Exception):
    """The filesystem could not be mounted, resized or unmounted; the message says why."""


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FilesystemError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
            " (mounting a tmpfs needs root)"
        )


@dataclass(frozen=True)
class SmallFilesystem:
    """A mounted tmpfs."""

    directory: Path

    def resize(self, size: int) -> None:
        """Give it `size` bytes (rounded up to whole pages by the kernel)."""
        _run(["mount", "-o", f"remount,size={size}", str(self.directory)])

    def files(self) -> list[Path]:
        """Every regular file in it, hidden ones included."""
        return sorted(path for path in self.directory.rglob("*") if path.is_file())


@contextmanager
def small_filesystem(directory: Path, size: int) -> Iterator[SmallFilesystem]:
    """Mount a tmpfs of `size` bytes on `directory` (created if needed) for the block."""
    directory.mkdir(parents=True, exist_ok=True)
    _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)])
    try:
        yield SmallFilesystem(directory)
    finally:
        _run(["umount", "--lazy", str(directory)])
