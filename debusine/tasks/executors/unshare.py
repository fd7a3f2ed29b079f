"""
The `unshare` executor: commands run as root inside an extracted system tarball.

As an ordinary user (the worker's normal case) everything happens inside a user namespace
made by `unshare --map-auto --map-root-user`: the user is root there and its `/etc/subuid` and
`/etc/subgid` ranges are the other users and groups, so extracting the tarball, and running
commands in it, keep its ownership without any privilege on the host. The user needs such
ranges (`usermod --add-subuids/--add-subgids`), and the kernel must allow unprivileged user
namespaces. As root on the host no user namespace is made (root has no ranges to map): the
environment's root is then the host's root, confined by chroot and mount/PID namespaces only.

Each command runs in new mount and PID namespaces with a fresh `/proc`, the host's `/dev`
(bind-mounted: device nodes cannot be created in a user namespace, so the tarball's are not
extracted) and the host's network and `/etc/resolv.conf`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from debusine.tasks.executors.cache import CachedEnvironment

#: Longest the availability check may take.
CHECK_TIMEOUT = 30

#: Environment variables of a command run in the environment (`run(env=...)` adds to them).
DEFAULT_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}

Stream = int | IO[Any] | None


class ExecutorError(Exception):
    """The environment cannot be set up, used or removed; the message says why."""


def user_namespace_arguments() -> list[str]:
    """`unshare` options making the user namespace: none when running as root (see above)."""
    if os.geteuid() == 0:
        return []
    return ["--map-auto", "--map-root-user"]


def unshare_available() -> bool:
    """
    Whether the unshare executor can work here: `unshare` exists and can make the namespaces
    it needs (for a non-root user: a user namespace mapping its subordinate ID ranges).
    """
    if shutil.which("unshare") is None:
        return False
    argv = ["unshare", *user_namespace_arguments(), "--mount", "--pid", "--fork", "true"]
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=CHECK_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


class UnshareExecutor:
    """One environment extracted under `workdir`, from `start()` until `stop()`."""

    def __init__(self, environment: CachedEnvironment, workdir: Path) -> None:
        self.environment = environment
        self.workdir = workdir
        #: The instance's private directory (under workdir) and the environment's root in it.
        self.directory: Path | None = None

    @property
    def root(self) -> Path:
        if self.directory is None:
            raise ExecutorError("the environment is not started")
        return self.directory / "root"

    @property
    def started(self) -> bool:
        return self.directory is not None

    def __enter__(self) -> UnshareExecutor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- Lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Extract the tarball into a new private directory under `workdir`."""
        if self.directory is not None:
            raise ExecutorError("the environment is already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix="unshare-", dir=self.workdir))
        try:
            self.root.mkdir()
            root = shlex.quote(str(self.root))
            tarball = shlex.quote(str(self.environment.tarball))
            # GNU tar recognises the compression of a file it reads (zstd, xz, gzip).
            script = (
                f"tar --extract --file {tarball} --directory {root} "
                "--numeric-owner --same-owner --same-permissions --exclude='./dev/*' "
                # The host's resolver configuration, replacing any symlink to a local stub.
                f"&& rm -f {root}/etc/resolv.conf "
                f"&& cp --dereference /etc/resolv.conf {root}/etc/resolv.conf"
            )
            result = self._unshare(["sh", "-c", script], stdout=subprocess.PIPE)
            if result.returncode != 0:
                raise ExecutorError(
                    f"cannot extract {self.environment.tarball}: {_last_lines(result.stdout)}"
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Remove the environment and the instance's directory (nothing if not started)."""
        directory, self.directory = self.directory, None
        if directory is None or not directory.exists():
            return
        # Files owned by subordinate IDs can only be removed from inside the namespace.
        result = subprocess.run(
            [
                "unshare",
                *user_namespace_arguments(),
                "rm",
                "-rf",
                "--one-file-system",
                "--",
                str(directory),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        if directory.exists():
            raise ExecutorError(
                f"cannot remove {directory}: {_last_lines(result.stderr + result.stdout)}"
            )

    # --- Commands ------------------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        cwd: str = "/",
        env: Mapping[str, str] | None = None,
        stdin: Stream = subprocess.DEVNULL,
        stdout: Stream = None,
        stderr: Stream = None,
        timeout: float | None = None,
        check: bool = False,
        text: bool = False,
    ) -> subprocess.CompletedProcess[Any]:
        """
        Run `argv` as root in the environment, in directory `cwd` (of the environment), with
        DEFAULT_ENVIRONMENT plus `env`. The other arguments are `subprocess.run`'s; on timeout
        every process of the command is killed (they die with its PID namespace).
        """
        if not argv:
            raise ValueError("no command to run")
        root = shlex.quote(str(self.root))
        command = shlex.join(["/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, *argv])
        script = f"mount --rbind /dev {root}/dev && exec chroot {root} {command}"
        return self._unshare(
            [
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                f"--mount-proc={self.root}/proc",
                "sh",
                "-c",
                script,
            ],
            env={**DEFAULT_ENVIRONMENT, **(env or {})},
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
            check=check,
            text=text,
        )

    def copy_in(self, host: Path, guest: str) -> None:
        """Copy the host file or directory `host` to the path `guest` of the environment."""
        if not host.exists():
            raise ExecutorError(f"{host} does not exist")
        script = (
            'set -e; target="$1"; staging="$(mktemp -d "$(dirname "$target")/.copy-in.XXXXXX")"; '
            'tar --extract --directory "$staging" --no-same-owner; '
            'rm -rf "$target"; mv "$staging/$2" "$target"; rmdir "$staging"'
        )
        sender = subprocess.Popen(
            ["tar", "--create", "--directory", str(host.parent), "--", host.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert sender.stdout is not None
        try:
            result = self.run(
                ["sh", "-c", script, "sh", guest, host.name],
                stdin=sender.stdout,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        finally:
            sender.stdout.close()
            sender_error = _finish(sender)
        if sender.returncode != 0 or result.returncode != 0:
            raise ExecutorError(
                f"cannot copy {host} to {guest}: {_last_lines(sender_error + result.stdout)}"
            )

    def copy_out(self, guest: str, host: Path) -> None:
        """
        Copy the file or directory `guest` of the environment to the host path `host`
        (replacing it). Paths are resolved inside the environment: a symbolic link there
        cannot point at a host file.
        """
        guest_path = Path(guest)
        host.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".copy-out-", dir=host.parent))
        try:
            receiver = subprocess.Popen(
                ["tar", "--extract", "--directory", str(staging), "--no-same-owner"],
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert receiver.stdin is not None
            try:
                result = self.run(
                    [
                        "tar",
                        "--create",
                        "--directory",
                        str(guest_path.parent),
                        "--",
                        guest_path.name,
                    ],
                    stdout=receiver.stdin,
                    stderr=subprocess.PIPE,
                )
            finally:
                receiver.stdin.close()
                receiver_error = _finish(receiver)
            if result.returncode != 0 or receiver.returncode != 0:
                raise ExecutorError(
                    f"cannot copy {guest} out to {host}: "
                    f"{_last_lines(result.stderr + receiver_error)}"
                )
            if host.is_dir() and not host.is_symlink():
                shutil.rmtree(host)
            (staging / guest_path.name).replace(host)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- Internals -----------------------------------------------------------------------------

    def _unshare(
        self, arguments: list[str], *, stdout: Stream = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run `unshare` (user namespace) with `arguments`; stderr joins a piped stdout."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.STDOUT if stdout is subprocess.PIPE else None)
        kwargs.setdefault("check", False)
        return subprocess.run(
            ["unshare", *user_namespace_arguments(), *arguments], stdout=stdout, **kwargs
        )


def _finish(process: subprocess.Popen[bytes]) -> bytes:
    """Wait for a helper process whose other pipe is closed; its standard error."""
    assert process.stderr is not None
    error = process.stderr.read()
    process.stderr.close()
    process.wait()
    return error


def _last_lines(output: bytes | str | None, count: int = 5) -> str:
    if not output:
        return "(no output)"
    if isinstance(output, bytes):
        output = output.decode("utf-8", errors="replace")
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:]) or "(no output)"
