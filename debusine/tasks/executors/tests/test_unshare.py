"""
UnshareExecutor on the real bookworm buildd tarball: start, run, copy in and out, stop.

Once as this test process's user (root: no user namespace) and once as the unprivileged
`debusine-worker` user (user namespace with its subordinate ID ranges), which runs the same
scenario in a Python of `worker_venv()` since it cannot execute the project's virtualenv.
Each extraction of the 137 MiB tarball takes about 10 s.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debusine.tasks.executors.cache import CachedEnvironment
from debusine.tasks.executors.unshare import ExecutorError, UnshareExecutor, unshare_available
from debusine.testing.environments import BUILDD_TARBALL
from debusine.testing.worker import CHECKOUT, ensure_worker_user, worker_venv

TARBALL = BUILDD_TARBALL
WORKER_USER = "debusine-worker"

pytestmark = [
    pytest.mark.usefixtures("buildd_tarball"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare is not installed"),
]

#: The scenario, run by `python - WORKDIR` (stdin) for both users; prints a JSON report.
SCENARIO = r"""
import json, os, subprocess, sys
from pathlib import Path
from debusine.tasks.executors.cache import CachedEnvironment
from debusine.tasks.executors.unshare import ExecutorError, UnshareExecutor, unshare_available

workdir = Path(sys.argv[1])
report = {"available": unshare_available()}
environment = CachedEnvironment(1, Path(sys.argv[2]), {"codename": "bookworm"})
executor = UnshareExecutor(environment, workdir)
executor.start()
report["root_in_workdir"] = str(executor.root.parent.parent) == str(workdir)
run = executor.run(["cat", "/etc/debian_version"], stdout=subprocess.PIPE, text=True)
report["debian_version"] = [run.returncode, run.stdout.strip()]
run = executor.run(
    ["sh", "-c", "id -u; pwd; echo $HOME $MARK; stat -c %U /var/cache/apt/archives/partial;"
     "ls /proc | grep -c '^[0-9]' ; test -c /dev/null && echo devnull"],
    cwd="/tmp",
    env={"MARK": "marked"},
    stdout=subprocess.PIPE,
    text=True,
)
report["inside"] = run.stdout.split("\n")
run = executor.run(["sh", "-c", "exit 3"])
report["exit_status"] = run.returncode
try:
    executor.run(["false"], check=True)
except subprocess.CalledProcessError as error:
    report["check"] = error.returncode
try:
    executor.run(["sleep", "60"], timeout=1)
except subprocess.TimeoutExpired:
    report["timeout"] = True
source = workdir / "in.txt"
source.write_text("hello\n")
tree = workdir / "tree"
(tree / "sub").mkdir(parents=True)
(tree / "sub" / "file").write_text("deep\n")
executor.copy_in(source, "/root/in.txt")
executor.copy_in(tree, "/srv/tree")
run = executor.run(
    ["sh", "-c", "cat /root/in.txt /srv/tree/sub/file; stat -c %U /srv/tree/sub/file;"
     "mkdir /tmp/results && echo built > /tmp/results/out && ln -s /etc/shadow /tmp/link"],
    stdout=subprocess.PIPE,
    text=True,
)
report["copied_in"] = run.stdout.split("\n")
executor.copy_out("/tmp/results", workdir / "results")
executor.copy_out("/root/in.txt", workdir / "back.txt")
report["copied_out"] = [
    (workdir / "results" / "out").read_text(),
    (workdir / "back.txt").read_text(),
    (workdir / "results" / "out").stat().st_uid == os.getuid(),
]
try:
    executor.copy_out("/nonexistent", workdir / "nothing")
except ExecutorError as error:
    report["copy_out_missing"] = str(error)
executor.copy_out("/tmp/link", workdir / "link")
report["link_stays_a_link"] = os.readlink(workdir / "link")
executor.stop()
report["after_stop"] = sorted(
    name for name in os.listdir(workdir)
    if name not in ("in.txt", "tree", "results", "back.txt", "link")
)
print(json.dumps(report))
"""


def check_report(report: dict[str, Any]) -> None:
    assert report["available"] is True
    assert report["root_in_workdir"] is True
    assert report["debian_version"] == [0, report["debian_version"][1]]
    assert report["debian_version"][1].startswith("12.")
    uid_inside, cwd, env_line, apt_owner, process_count, devnull = report["inside"][:6]
    assert (uid_inside, cwd, env_line) == ("0", "/tmp", "/root marked")
    # Ownership from the tarball survives extraction.
    assert apt_owner == "_apt"
    # A fresh /proc of a new PID namespace: only the shell and its children.
    assert int(process_count) < 5
    assert devnull == "devnull"
    assert report["exit_status"] == 3
    assert report["check"] == 1
    assert report["timeout"] is True
    assert report["copied_in"][:3] == ["hello", "deep", "root"]
    assert report["copied_out"] == ["built\n", "hello\n", True]
    assert "/nonexistent" in report["copy_out_missing"]
    assert report["link_stays_a_link"] == "/etc/shadow"
    # stop() removed the instance's directory and everything in it.
    assert report["after_stop"] == []


def test_unshare_as_the_current_user(tmp_path: Path) -> None:
    if not unshare_available():
        pytest.skip("unshare cannot make the namespaces here")
    result = subprocess.run(
        [sys.executable, "-", str(tmp_path), str(TARBALL)],
        input=SCENARIO,
        capture_output=True,
        text=True,
        check=False,
        cwd=CHECKOUT,
    )
    assert result.returncode == 0, result.stderr
    check_report(json.loads(result.stdout))


@pytest.fixture
def worker_workdir() -> Iterator[Path]:
    """A directory of the worker user's (pytest's tmp_path is not reachable by it)."""
    account = ensure_worker_user(WORKER_USER)
    directory = Path(tempfile.mkdtemp(prefix="debusine-test-unshare-"))
    os.chown(directory, account.pw_uid, account.pw_gid)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
def test_unshare_as_an_unprivileged_user(worker_workdir: Path) -> None:
    account = pwd.getpwnam(WORKER_USER)
    python = worker_venv() / "bin" / "python"
    result = subprocess.run(
        [str(python), "-", str(worker_workdir), str(TARBALL)],
        input=SCENARIO,
        capture_output=True,
        text=True,
        check=False,
        cwd=worker_workdir,
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": account.pw_dir,
            "PYTHONPATH": str(CHECKOUT),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
    )
    assert result.returncode == 0, result.stderr
    check_report(json.loads(result.stdout))


def test_start_fails_cleanly_on_a_bad_tarball(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(b"not a tarball")
    executor = UnshareExecutor(CachedEnvironment(1, bad, {}), tmp_path / "work")
    with pytest.raises(ExecutorError, match="cannot extract"):
        executor.start()
    assert not executor.started
    assert list((tmp_path / "work").iterdir()) == []
    with pytest.raises(ExecutorError, match="not started"):
        executor.run(["true"])
