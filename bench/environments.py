"""
What an environment costs a task run: unpacking a system tarball as it is stored (xz, what
`mmdebstrap` makes, as Debusine does) against the zstd copy our worker's environment cache
keeps, and what making that copy costs once.

Every run of a task in an environment unpacks it again (sbuild in unshare mode, the unshare
executor of lintian and others), so this is paid per work request; the re-compression is paid
once per environment and worker.

The tarball is the one the Debian end-to-end tests keep under /var/cache/debusine-tests (run
`tests/integration/test_debian_pipeline.py` once), or `--tarball FILE.tar.xz`.

Usage: `.venv/bin/python -m bench.environments [--tarball FILE.tar.xz] [--runs 3]`
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from debusine.tasks.executors.cache import keep_recompressed
from debusine.testing.worker import TEST_CACHE

KEPT = TEST_CACHE / "environments" / "bookworm-amd64-buildd" / "system.tar.xz"


def unpack(tarball: Path, directory: Path) -> tuple[float, float]:
    """
    Wall-clock and CPU seconds (tar and its decompressor) to unpack `tarball` into a new
    directory under `directory`, device nodes left out. Dirty pages are written out first, so
    that one run does not pay for the previous one's writes.
    """
    root = Path(tempfile.mkdtemp(dir=directory))
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(
        ["tar", "-C", str(root), "--exclude=./dev/*", "-xf", str(tarball)],
        check=True,
    )
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    shutil.rmtree(root)
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tarball", type=Path, default=KEPT)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    if not arguments.tarball.is_file():
        print(f"no {arguments.tarball}: run tests/integration/test_debian_pipeline.py first")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-environments-") as scratch:
        directory = Path(scratch)
        entry = directory / "entry"
        entry.mkdir()
        copy = directory / "download.tar.xz"
        shutil.copyfile(arguments.tarball, copy)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        kept = entry / keep_recompressed(copy, entry, arguments.tarball.name)
        recompress_wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        recompress = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        xz_size, zstd_size = arguments.tarball.stat().st_size, kept.stat().st_size
        print(
            f"{arguments.tarball.name}: {xz_size / 2**20:.0f} MiB xz, "
            f"{zstd_size / 2**20:.0f} MiB as the cache keeps it ({kept.name})"
        )
        print(
            f"re-compression, once per environment and worker: {recompress_wall:.1f} s wall, "
            f"{recompress:.1f} CPU-s"
        )
        runs: dict[str, list[tuple[float, float]]] = {"xz": [], "zstd": []}
        for _run in range(arguments.runs):  # interleaved, so that both see the same machine
            runs["xz"].append(unpack(arguments.tarball, directory))
            runs["zstd"].append(unpack(kept, directory))
        medians = {
            name: (
                statistics.median(wall for wall, _cpu in measured),
                statistics.median(cpu for _wall, cpu in measured),
            )
            for name, measured in runs.items()
        }
        for name, (wall, cpu) in medians.items():
            print(
                f"unpack per run, {name + ':':5} median {wall:5.2f} s wall, {cpu:5.2f} CPU-s "
                f"({arguments.runs} runs)"
            )
        saved = medians["xz"][1] - medians["zstd"][1]
        print(
            f"zstd saves {saved:.2f} CPU-s per run "
            f"({medians['xz'][1] / medians['zstd'][1]:.1f}x less CPU, "
            f"wall {medians['xz'][0] / medians['zstd'][0]:.2f}x); the copy's CPU pays for "
            f"itself after {recompress / saved:.1f} runs"
            if saved > 0
            else "zstd saves no CPU here"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
