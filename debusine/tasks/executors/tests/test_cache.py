"""
EnvironmentCache: one download per artifact, LRU eviction, entries in use kept, concurrent
users sharing one download. The client here is a stand-in serving bytes from memory (the
real server is used by tests/integration/test_executor_task.py).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from debusine.client.errors import DownloadError
from debusine.protocol.artifacts import FileResponse, LenientArtifactResponse
from debusine.tasks.executors.cache import (
    LAST_USED_FILE,
    METADATA_FILE,
    EnvironmentCache,
    EnvironmentCacheError,
)


class MemoryClient:
    """Serves system-tarball artifacts from memory and counts downloads (in a file)."""

    def __init__(self, counter: Path, *, delay: float = 0.0, filename: str = "system.tar") -> None:
        self.filename = filename
        self.contents: dict[int, bytes] = {}
        self.categories: dict[int, str] = {}
        self.wrong_checksum: set[int] = set()
        self.counter = counter
        self.delay = delay

    def add(
        self, artifact_id: int, content: bytes, category: str = "debian:system-tarball"
    ) -> None:
        self.contents[artifact_id] = content
        self.categories[artifact_id] = category

    def downloads(self) -> list[int]:
        if not self.counter.exists():
            return []
        return [int(line) for line in self.counter.read_text().split()]

    def artifact_get(self, artifact_id: int) -> LenientArtifactResponse:
        content = self.contents[artifact_id]
        digest = hashlib.sha256(content).hexdigest()
        if artifact_id in self.wrong_checksum:
            digest = "0" * 64
        return LenientArtifactResponse(
            id=artifact_id,
            url=f"http://x/api/1.0/artifact/{artifact_id}/",
            workspace="System",
            category=self.categories[artifact_id],
            created_at="2025-01-01T00:00:00Z",  # type: ignore[arg-type]
            data={"filename": self.filename, "codename": "bookworm", "architecture": "amd64"},
            download_tar_gz_url="http://x/",
            files_to_upload=[],
            files={
                self.filename: FileResponse(
                    size=len(content),
                    checksums={"sha256": digest},
                    type="file",
                    url=f"http://x/{artifact_id}",
                )
            },
        )

    def download_file(self, name: str, file: FileResponse, destination: Path) -> None:
        with self.counter.open("a") as counter:
            counter.write(f"{file.url.rsplit('/', 1)[1]}\n")
        time.sleep(self.delay)
        content = self.contents[int(file.url.rsplit("/", 1)[1])]
        destination.write_bytes(content)
        if hashlib.sha256(content).hexdigest() != file.checksums["sha256"]:
            destination.unlink()
            raise DownloadError(f"{name}: SHA-256 differs")


@pytest.fixture
def client(tmp_path: Path) -> MemoryClient:
    memory = MemoryClient(tmp_path / "downloads")
    for artifact_id in range(1, 6):
        memory.add(artifact_id, f"tarball {artifact_id}\n".encode())
    return memory


def use(cache: EnvironmentCache, artifact_id: int, client: Any) -> Path:
    with cache.get(artifact_id, client) as environment:
        return environment.tarball


def test_downloads_once_and_keeps_the_data(tmp_path: Path, client: MemoryClient) -> None:
    cache = EnvironmentCache(tmp_path / "cache")
    environment = cache.get(3, client)
    assert environment.artifact_id == 3
    assert environment.tarball == tmp_path / "cache" / "3" / "system.tar"
    assert environment.tarball.read_bytes() == b"tarball 3\n"
    assert environment.data["codename"] == "bookworm"
    environment.release()
    again = cache.get(3, client)
    again.release()
    assert again.tarball == environment.tarball
    assert client.downloads() == [3]
    metadata = json.loads((tmp_path / "cache" / "3" / METADATA_FILE).read_text())
    assert metadata["sha256"] == hashlib.sha256(b"tarball 3\n").hexdigest()
    assert sorted(path.name for path in (tmp_path / "cache" / "3").iterdir()) == [
        ".lock",
        METADATA_FILE,
        LAST_USED_FILE,
        "system.tar",
    ]


def test_least_recently_used_entries_are_evicted(tmp_path: Path, client: MemoryClient) -> None:
    cache = EnvironmentCache(tmp_path / "cache", max_entries=2)
    use(cache, 1, client)
    use(cache, 2, client)
    use(cache, 1, client)  # 1 is now more recent than 2
    use(cache, 3, client)
    assert cache.cached_ids() == [3, 1]
    assert not (tmp_path / "cache" / "2").exists()
    use(cache, 2, client)  # downloaded again
    assert cache.cached_ids() == [2, 3]
    assert client.downloads() == [1, 2, 3, 2]


def test_an_entry_in_use_is_not_evicted(tmp_path: Path, client: MemoryClient) -> None:
    cache = EnvironmentCache(tmp_path / "cache", max_entries=1)
    held = cache.get(1, client)
    use(cache, 2, client)
    # 1 is beyond the limit but still held: kept, and usable.
    assert sorted(cache.cached_ids()) == [1, 2]
    assert held.tarball.read_bytes() == b"tarball 1\n"
    held.release()
    use(cache, 2, client)
    assert cache.cached_ids() == [2]


def test_bad_checksum_leaves_no_entry_and_is_retried(tmp_path: Path, client: MemoryClient) -> None:
    cache = EnvironmentCache(tmp_path / "cache")
    client.wrong_checksum.add(4)
    with pytest.raises(DownloadError):
        cache.get(4, client)
    assert cache.cached_ids() == []
    assert not (tmp_path / "cache" / "4" / "system.tar").exists()
    client.wrong_checksum.clear()
    assert use(cache, 4, client).read_bytes() == b"tarball 4\n"
    assert client.downloads() == [4, 4]


def test_only_system_tarballs(tmp_path: Path, client: MemoryClient) -> None:
    client.add(9, b"x", category="debian:source-package")
    with pytest.raises(EnvironmentCacheError, match="not a debian:system-tarball"):
        EnvironmentCache(tmp_path / "cache").get(9, client)


def _concurrent_get(directory: str, counter: str, artifact_id: int, result: str) -> None:
    client = MemoryClient(Path(counter), delay=0.5)
    client.add(artifact_id, b"shared\n")
    environment = EnvironmentCache(Path(directory)).get(artifact_id, client)
    Path(result).write_text(environment.tarball.read_text())


def test_concurrent_users_share_one_download(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(
            target=_concurrent_get,
            args=(
                str(tmp_path / "cache"),
                str(tmp_path / "downloads"),
                7,
                str(tmp_path / f"r{i}"),
            ),
        )
        for i in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert (tmp_path / "downloads").read_text().split() == ["7"]
    assert [(tmp_path / f"r{i}").read_text() for i in range(3)] == ["shared\n"] * 3


def test_an_xz_tarball_is_kept_recompressed_with_zstd(tmp_path: Path) -> None:
    # What Debusine's (and our) mmdebstrap makes is xz, slow to unpack at every run: the cache
    # keeps a zstd copy holding the same tar.
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "debian_version").write_text("12.9\n")
    plain = tmp_path / "system.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(plain), "."], check=True)
    compressed = subprocess.run(
        ["xz", "--stdout", str(plain)], check=True, capture_output=True
    ).stdout
    client = MemoryClient(tmp_path / "downloads", filename="system.tar.xz")
    client.add(7, compressed)

    with EnvironmentCache(tmp_path / "cache").get(7, client) as environment:
        assert environment.tarball == tmp_path / "cache" / "7" / "system.tar.zst"
        unpacked = subprocess.run(
            ["zstd", "--decompress", "--stdout", str(environment.tarball)],
            check=True,
            capture_output=True,
        ).stdout
    assert unpacked == plain.read_bytes()
    entry = sorted(path.name for path in (tmp_path / "cache" / "7").iterdir())
    assert entry == sorted([".lock", LAST_USED_FILE, METADATA_FILE, "system.tar.zst"])
    metadata = json.loads((tmp_path / "cache" / "7" / METADATA_FILE).read_text())
    assert metadata["artifact_filename"] == "system.tar.xz"
    assert metadata["sha256"] == hashlib.sha256(compressed).hexdigest()


def test_a_corrupt_xz_tarball_leaves_no_entry(tmp_path: Path) -> None:
    client = MemoryClient(tmp_path / "downloads", filename="system.tar.xz")
    client.add(8, b"not xz at all")

    with pytest.raises(EnvironmentCacheError, match=r"cannot re-compress system\.tar\.xz"):
        EnvironmentCache(tmp_path / "cache").get(8, client)
    assert not list((tmp_path / "cache" / "8").glob("system.tar*"))
