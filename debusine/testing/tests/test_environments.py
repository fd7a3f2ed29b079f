"""
Tests of `debusine.testing.environments`: when the tests' build environment is (re)made, from
what, and that concurrent callers wait for the one making it.

The real bootstrap with mmdebstrap is exercised by every test that asks for the
`buildd_tarball` fixture on a machine that does not have the tarball yet.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from debusine.testing.environments import (
    KEPT_FOR,
    PIPELINE_TARBALL,
    bootstrap_command,
    buildd_tarball,
    is_recent,
)


def tar_names(tarball: Path) -> list[str]:
    """The member names of a tarball, whatever its compression (GNU tar picks it)."""
    listing = subprocess.run(["tar", "-tf", str(tarball)], capture_output=True, check=True)
    return sorted(listing.stdout.decode().split())


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    """A kept pipeline environment: a small xz tarball and its data, written just now."""
    directory = tmp_path / "environments" / "bookworm-amd64-buildd"
    directory.mkdir(parents=True)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "debian_version").write_text("12.0\n")
    with tarfile.open(directory / PIPELINE_TARBALL, "w:xz") as archive:
        archive.add(tree, arcname=".")
    (directory / "data.json").write_text(json.dumps({"filename": PIPELINE_TARBALL}))
    return directory


def test_is_recent(tmp_path: Path) -> None:
    path = tmp_path / "file"
    assert not is_recent(path)
    path.write_text("x")
    assert is_recent(path)
    assert not is_recent(path, now=time.time() + KEPT_FOR + 1)


def test_a_recent_tarball_is_returned_as_it_is(tmp_path: Path, pipeline: Path) -> None:
    target = tmp_path / "env.tar.zst"
    target.write_bytes(b"kept")
    assert buildd_tarball(target, tmp_path / "lock", pipeline) == target
    assert target.read_bytes() == b"kept"
    assert not (tmp_path / "lock").exists()  # not even the lock was needed


@pytest.mark.parametrize("existing", [False, True])
def test_made_from_the_pipeline_tarball_as_zstd(
    tmp_path: Path, pipeline: Path, existing: bool
) -> None:
    target = tmp_path / "cache" / "env.tar.zst"
    if existing:  # too old: made again
        target.parent.mkdir()
        target.write_bytes(b"old")
        os.utime(target, (0, 0))
    leftover = target.parent / f".{target.name}.1.staging"
    leftover.mkdir(parents=True)

    assert buildd_tarball(target, tmp_path / "lock", pipeline) == target

    assert target.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # zstd's magic number
    assert tar_names(target) == tar_names(pipeline / PIPELINE_TARBALL)
    assert "./etc/debian_version" in tar_names(target)
    assert target.stat().st_mode & 0o777 == 0o644
    assert is_recent(target)
    # Only the tarball is left: no staging directory, neither ours nor a dead attempt's.
    assert sorted(path.name for path in target.parent.iterdir()) == [target.name]


def test_an_old_pipeline_tarball_is_not_used(tmp_path: Path, pipeline: Path) -> None:
    """Without a recent pipeline tarball it bootstraps; on this machine's behalf: no mmdebstrap."""
    os.utime(pipeline / "data.json", (0, 0))
    target = tmp_path / "env.tar.zst"
    environment = {**os.environ, "PATH": str(tmp_path / "nothing")}
    script = (
        "import sys; from pathlib import Path; "
        "from debusine.testing.environments import buildd_tarball; "
        "buildd_tarball(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(target), str(tmp_path / "lock"), str(pipeline)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert result.returncode != 0
    assert "mmdebstrap is not installed" in result.stderr
    assert not target.exists()


def test_a_caller_waits_for_the_one_making_it(tmp_path: Path, pipeline: Path) -> None:
    """While another process holds the lock, a caller waits, then uses what that one made."""
    target = tmp_path / "env.tar.zst"
    lock_file = tmp_path / "lock"
    script = (
        "import sys; from pathlib import Path; "
        "from debusine.testing.environments import buildd_tarball; "
        "print(buildd_tarball(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))"
    )
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiting = subprocess.Popen(
            [sys.executable, "-c", script, str(target), str(lock_file), str(pipeline)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(3)
            assert waiting.poll() is None, "it did not wait for the lock"
            assert not target.exists()
            target.write_bytes(b"made by the lock holder")
        except BaseException:
            waiting.kill()
            raise
    output, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0
    assert output.strip() == str(target)
    assert target.read_bytes() == b"made by the lock holder"


def test_bootstrap_command_runs_as_the_worker_user_when_root(tmp_path: Path) -> None:
    command = bootstrap_command(tmp_path / "env.tar.zst", "http://mirror.example/debian")
    mmdebstrap = command[command.index("mmdebstrap") :]
    assert mmdebstrap == [
        "mmdebstrap",
        "--mode=unshare",
        "--variant=buildd",
        "--architectures=amd64",
        "--quiet",
        "bookworm",
        str(tmp_path / "env.tar.zst"),
        "http://mirror.example/debian",
    ]
    if os.geteuid() == 0:
        assert command[:4] == ["runuser", "-u", "debusine-worker", "--"]
    else:
        assert command == mmdebstrap
