"""
The worker's cache of environments: system tarballs downloaded once, shared by tasks.

Layout of the cache directory: one subdirectory per artifact ID, holding

- `.lock`: the entry's lock file (`fcntl.flock`): exclusive while the tarball is downloaded
  or the entry evicted, shared while a task uses the tarball;
- the tarball, under the artifact's `filename`; it is downloaded under a temporary name and
  renamed once its size and SHA-256 match the artifact's, so a present tarball is complete.
  An xz tarball (what Debusine's mmdebstrap makes, and ours, for Debusine workers' sake) is
  kept re-compressed with zstd instead (`<name>.tar.zst`), once, at download: every run
  unpacks the environment again, and zstd does that several times faster than xz;
- `environment.json`: the artifact's ID, file name, SHA-256 and data (written last, atomically:
  an entry without it is incomplete);
- `last-used`: the time of the last `get()`, for least-recently-used eviction.

After each `get()` the cache keeps at most `max_entries` entries: the least recently used
ones beyond that are removed, unless a task still holds them (their lock cannot be taken).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from debusine.protocol.artifacts import FileResponse, LenientArtifactResponse

logger = logging.getLogger(__name__)

#: Category of the artifacts an environment is made from.
SYSTEM_TARBALL_CATEGORY = "debian:system-tarball"
LOCK_FILE = ".lock"
METADATA_FILE = "environment.json"
LAST_USED_FILE = "last-used"
#: Names an artifact's tarball may not have: they are the cache's own files.
RESERVED_NAMES = frozenset({LOCK_FILE, METADATA_FILE, LAST_USED_FILE})
DEFAULT_MAX_ENTRIES = 10


class ArtifactDownloader(Protocol):
    """What the cache needs of a client (`DebusineClient` is one)."""

    def artifact_get(self, artifact_id: int) -> LenientArtifactResponse: ...

    def download_file(self, name: str, file: FileResponse, destination: Path) -> None: ...


class EnvironmentCacheError(Exception):
    """The artifact cannot be used as an environment, or the cache cannot hold it."""


@dataclass
class CachedEnvironment:
    """
    A system tarball in the cache, with its artifact's data (codename, architecture, ...).

    The object returned by `EnvironmentCache.get()` holds a shared lock on its cache entry so
    that no other process evicts it while it is in use: `release()` (or the end of the process)
    lets it go.
    """

    artifact_id: int
    tarball: Path
    data: dict[str, Any]
    _lock_descriptor: int | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Stop protecting the entry from eviction (nothing happens if it was not held)."""
        if self._lock_descriptor is not None:
            os.close(self._lock_descriptor)
            self._lock_descriptor = None

    def __enter__(self) -> CachedEnvironment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _check_filename(filename: Any) -> str:
    if (
        not isinstance(filename, str)
        or not filename
        or "/" in filename
        or "\0" in filename
        or filename.startswith(".")
        or filename in RESERVED_NAMES
    ):
        raise EnvironmentCacheError(f"the artifact's data has an unusable filename: {filename!r}")
    return filename


def keep_recompressed(downloaded: Path, entry: Path, filename: str) -> str:
    """
    Move the downloaded tarball into `entry` under the name it is kept as (returned): a
    `.tar.xz` becomes `.tar.zst` when zstd and xz are installed, anything else stays as it is.
    """
    if not filename.endswith(".tar.xz") or not (shutil.which("zstd") and shutil.which("xz")):
        downloaded.replace(entry / filename)
        return filename
    kept = filename.removesuffix(".xz") + ".zst"
    partial = entry / f".recompress.{kept}"
    started = time.monotonic()
    try:
        with open(partial, "wb") as output:
            decompress = subprocess.Popen(
                ["xz", "--decompress", "--stdout", "--threads=0", str(downloaded)],
                stdout=subprocess.PIPE,
            )
            assert decompress.stdout is not None
            compress = subprocess.run(
                ["zstd", "--quiet", "-3", "--threads=0", "--stdout"],
                stdin=decompress.stdout,
                stdout=output,
                check=False,
            )
            decompress.stdout.close()
            if decompress.wait() != 0 or compress.returncode != 0:
                raise EnvironmentCacheError(
                    f"cannot re-compress {filename}: xz exited with {decompress.returncode}, "
                    f"zstd with {compress.returncode}"
                )
        partial.replace(entry / kept)
    finally:
        partial.unlink(missing_ok=True)
    logger.info(
        "environment cache: %s kept as %s (%.1f s)", filename, kept, time.monotonic() - started
    )
    return kept


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


class _EntryLock:
    """The lock of one cache entry, held through an open descriptor of its `.lock` file."""

    def __init__(self, entry: Path) -> None:
        self.entry = entry
        self.descriptor: int | None = None

    def acquire(self, operation: int) -> bool:
        """
        Lock with `operation` (LOCK_SH or LOCK_EX, maybe | LOCK_NB); False if LOCK_NB failed.

        The entry may be evicted (its lock file unlinked) while we wait: then the lock we got
        protects nothing, so the entry is recreated and locked again.
        """
        path = self.entry / LOCK_FILE
        while True:
            self.entry.mkdir(parents=True, exist_ok=True)
            try:
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                continue  # evicted between mkdir and open
            try:
                fcntl.flock(descriptor, operation)
            except BlockingIOError:
                os.close(descriptor)
                return False
            except BaseException:
                os.close(descriptor)
                raise
            try:
                same = path.stat().st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.descriptor = descriptor
                return True
            os.close(descriptor)

    def change(self, operation: int) -> None:
        assert self.descriptor is not None
        fcntl.flock(self.descriptor, operation)

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None

    def detach(self) -> int:
        """Hand the open (locked) descriptor over to the caller."""
        assert self.descriptor is not None
        descriptor, self.descriptor = self.descriptor, None
        return descriptor


class EnvironmentCache:
    """An LRU cache of at most `max_entries` environments in `directory`."""

    def __init__(self, directory: Path, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("an environment cache holds at least one entry")
        self.directory = directory
        self.max_entries = max_entries

    def entry_directory(self, artifact_id: int) -> Path:
        return self.directory / str(int(artifact_id))

    def get(self, artifact_id: int, client: ArtifactDownloader) -> CachedEnvironment:
        """
        The environment of the `debian:system-tarball` artifact `artifact_id`, downloaded
        with `client` unless it is in the cache already; the result holds a shared lock on
        its entry (see `CachedEnvironment.release`). Raise EnvironmentCacheError if the
        artifact is not a usable system tarball, or the client's errors if the download fails.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = self.entry_directory(artifact_id)
        lock = _EntryLock(entry)
        lock.acquire(fcntl.LOCK_SH)
        try:
            metadata = self._read_metadata(entry)
            exclusive = False
            if metadata is None:
                # Downloading needs the entry to itself; another process may be doing it. The
                # lock is released and taken again (not converted) so that an eviction in
                # between is noticed (see _EntryLock.acquire).
                lock.release()
                lock.acquire(fcntl.LOCK_EX)
                exclusive = True
                metadata = self._read_metadata(entry)
                if metadata is None:
                    metadata = self._download(artifact_id, entry, client)
            # Most recently used before the lock is downgraded: eviction passes it over.
            _write_atomically(entry / LAST_USED_FILE, f"{time.time():.6f}\n")
            if exclusive:
                lock.change(fcntl.LOCK_SH)
            environment = CachedEnvironment(
                artifact_id=artifact_id,
                tarball=entry / metadata["filename"],
                data=metadata["data"],
                _lock_descriptor=lock.detach(),
            )
        except BaseException:
            lock.release()
            raise
        self.evict()
        return environment

    def cached_ids(self) -> list[int]:
        """The artifact IDs with a complete entry, most recently used first."""
        return [artifact_id for artifact_id, _ in self._entries_by_use() if _ is not None]

    def evict(self) -> list[int]:
        """Remove the least recently used entries beyond `max_entries`; return their IDs."""
        entries = self._entries_by_use()
        complete = [artifact_id for artifact_id, used in entries if used is not None]
        # Incomplete entries (a download that died) go first, then the oldest beyond the limit.
        candidates = [artifact_id for artifact_id, used in entries if used is None]
        candidates += complete[self.max_entries :]
        evicted = []
        for artifact_id in candidates:
            entry = self.entry_directory(artifact_id)
            lock = _EntryLock(entry)
            if not lock.acquire(fcntl.LOCK_EX | fcntl.LOCK_NB):
                continue  # in use, or being downloaded
            try:
                shutil.rmtree(entry)
                evicted.append(artifact_id)
                logger.info("environment cache: evicted artifact %d", artifact_id)
            finally:
                lock.release()
        return evicted

    # --- Internals -----------------------------------------------------------------------------

    def _entries_by_use(self) -> list[tuple[int, float | None]]:
        """(artifact ID, last use or None if incomplete) of every entry, most recent first."""
        entries: list[tuple[int, float | None]] = []
        try:
            children = list(self.directory.iterdir())
        except FileNotFoundError:
            return []
        for child in children:
            if not child.name.isdigit():
                continue
            used: float | None = None
            if (child / METADATA_FILE).exists():
                try:
                    used = float((child / LAST_USED_FILE).read_text(encoding="ascii"))
                except (OSError, ValueError):
                    used = 0.0
            entries.append((int(child.name), used))
        entries.sort(key=lambda item: -1.0 if item[1] is None else item[1], reverse=True)
        return entries

    @staticmethod
    def _read_metadata(entry: Path) -> dict[str, Any] | None:
        """The entry's metadata if the entry is complete, else None."""
        try:
            metadata = json.loads((entry / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(metadata, dict) or not (entry / str(metadata.get("filename"))).is_file():
            return None
        return metadata

    def _download(
        self, artifact_id: int, entry: Path, client: ArtifactDownloader
    ) -> dict[str, Any]:
        artifact = client.artifact_get(artifact_id)
        if artifact.category != SYSTEM_TARBALL_CATEGORY:
            raise EnvironmentCacheError(
                f"artifact {artifact_id} is a {artifact.category}, not a {SYSTEM_TARBALL_CATEGORY}"
            )
        filename = _check_filename(artifact.data.get("filename"))
        file = artifact.files.get(filename)
        if file is None:
            raise EnvironmentCacheError(
                f"artifact {artifact_id} has no file {filename!r} (its data names it)"
            )
        sha256 = file.checksums.get("sha256")
        if not sha256:
            raise EnvironmentCacheError(f"artifact {artifact_id}: {filename} has no SHA-256")
        logger.info("environment cache: downloading artifact %d (%s)", artifact_id, filename)
        temporary = entry / f".download.{filename}"
        try:
            # Checks the size and the SHA-256 (and removes the file if they differ).
            client.download_file(filename, file, temporary)
            kept = keep_recompressed(temporary, entry, filename)
        finally:
            temporary.unlink(missing_ok=True)
        metadata = {
            "artifact_id": artifact_id,
            "filename": kept,
            "artifact_filename": filename,
            "sha256": sha256,
            "data": artifact.data,
        }
        _write_atomically(entry / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
        return metadata
