"""
A clean Debian 12 root with our packages installed by apt, their processes running, for a test.

`DebianRoot` runs `mmdebstrap --mode=unshare` (as the unprivileged `debusine-worker` user when
we are root, as debusine.testing.environments does) with our `.deb` files and nginx,
PostgreSQL and Redis in `--include`: apt installs them and their dependencies into an empty
root, running our maintainer scripts. A `--customize-hook` then, inside that user namespace
(which shares this machine's network), runs `inside-start.sh` in the root: it starts
PostgreSQL (Unix socket only), Redis and nginx (the shipped virtual host, on spare ports), then
the `ExecStart` line of each unit, as systemd would (there is no systemd in the root), and
writes what the test needs to `out/` in the shared directory: the client's token, facts about
the installation. The test talks to nginx over HTTPS from outside, then calls `finish()`: the
hook runs `inside-stop.sh` (stops everything, then removes, reinstalls and purges the packages,
recording what survived) and mmdebstrap removes the root.

Every wait is bounded; `finish()` also kills mmdebstrap (and with it the namespace) when the
hook does not end in time.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from debusine.tasks.mmdebstrap import default_mirror
from debusine.testing.processes import free_port
from debusine.testing.worker import ensure_worker_user
from tests.deploy.units import parse_service, start_script

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
SUITE = "bookworm"
#: Packages besides ours: the services the server needs, tools the scripts use, and our
#: packages' dependencies (so that installing ours needs no download).
EXTRA_PACKAGES = (
    "nginx",
    "postgresql",
    "redis-server",
    "curl",
    "ca-certificates",
    "openssl",
    "python3",
    "adduser",
)
#: The units the test starts, in order; the oneshot migrations run to completion first.
SERVER_UNITS = (
    "debusine-server-migrate.service",
    "debusine-server.service",
    "debusine-server-scheduler.service",
    "debusine-server-provisioner.service",
)
WORKER_UNIT = "debusine-worker.service"
READY_TIMEOUT = 1500.0
HOOK_WAIT = 1800  # seconds the hook waits for the test to say it is done
FINISH_TIMEOUT = 600.0


class DebianRootError(Exception):
    """The root could not be made or its services did not start."""


def make_certificates(directory: Path) -> None:
    """A test CA (`ca.pem`) and a certificate for localhost signed by it (`server.pem/key`)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=Debusine test CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
    )  # fmt: skip


@dataclass
class DebianRoot:
    """mmdebstrap running our packages in a throwaway root; see the module docstring."""

    debs: Path
    shared: Path
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None

    @property
    def out(self) -> Path:
        return self.shared / "out"

    @property
    def api_url(self) -> str:
        return f"https://localhost:{self.https_port}/api"

    @property
    def ca(self) -> Path:
        return self.shared / "in" / "ca.pem"

    def start(self) -> None:
        """Bootstrap the root and start its services; return once the server answers."""
        account = ensure_worker_user()
        for directory in (self.shared, self.shared / "in", self.out):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, account.pw_uid, account.pw_gid)
        # The namespace's root is one of the user's subordinate IDs, not the user: it may
        # write only where anyone may.
        self.out.chmod(0o777)
        self.shared.parent.chmod(0o755)
        make_certificates(self.shared / "in")
        for name in ("inside-start.sh", "inside-stop.sh", "hook.sh"):
            (self.shared / "in" / name).write_text(getattr(self, name.replace("-", "_")[:-3])())
        for path in (self.shared / "in").iterdir():
            path.chmod(0o644)
        command = [
            "mmdebstrap",
            "--mode=unshare",
            "--variant=apt",
            "--verbose",  # apt's and dpkg's output, for the report of a failure
            f"--include={','.join(EXTRA_PACKAGES)}",
            f'--customize-hook=sh {self.shared}/in/hook.sh "$1"',
            SUITE,
            "/dev/null",
            default_mirror(),
        ]
        if os.geteuid() == 0:
            command = ["runuser", "-u", account.pw_name, "--", *command]
        self.process = subprocess.Popen(
            command,
            cwd=self.shared,
            stdin=subprocess.DEVNULL,
            stdout=open(self.shared / "mmdebstrap.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            text=True,
            # Nothing of ours (DEBUSINE_DATABASE_URL...) may reach the root's processes.
            env={
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LC_ALL": "C.UTF-8",
                "HOME": account.pw_dir,
            },
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not (self.out / "ready").exists():
            if self.process.poll() is not None or (self.out / "failed").exists():
                raise DebianRootError(f"the root did not start:\n{self.diagnostics()}")
            if time.monotonic() > deadline:
                raise DebianRootError(f"not ready in {READY_TIMEOUT} s:\n{self.diagnostics()}")
            time.sleep(1)

    def finish(self) -> int:
        """Let the hook stop everything and mmdebstrap end; return mmdebstrap's exit status."""
        if self.process is None:
            return 0
        (self.shared / "done").touch()
        try:
            return self.process.wait(timeout=FINISH_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def token(self) -> str:
        return (self.out / "token").read_text().strip()

    def diagnostics(self) -> str:
        """The tail of every log the root left in the shared directory."""
        parts = []
        for path in sorted(self.shared.rglob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.relative_to(self.shared)}\n{text[-3000:]}")
        return "\n".join(parts)

    # --- The scripts -------------------------------------------------------------------------

    def hook(self) -> str:
        """The customize hook: runs outside the root, in the user namespace, as its root."""
        shared = shlex.quote(str(self.shared))
        debs = " ".join(shlex.quote(str(path)) for path in sorted(self.debs.glob("*.deb")))
        return f"""set -u
root="$1"
shared={shared}
mkdir -p "$root/root/in" "$root/root/out" "$root/root/debs"
cp "$shared"/in/* "$root/root/in/"
cp {debs} "$root/root/debs/"
# Our packages, installed by apt in the root (their paths must be inside it, so not through
# mmdebstrap's --include, which installs from outside).
if chroot "$root" sh -c 'apt-get install -y --no-install-recommends /root/debs/*.deb' \\
        >"$shared/out/install.log" 2>&1 \\
    && chroot "$root" sh -x /root/in/inside-start.sh >"$shared/out/start.log" 2>&1; then
    cp "$root/root/out/"* "$shared/out/"
    touch "$shared/out/ready"
    waited=0
    while [ ! -e "$shared/done" ] && [ "$waited" -lt {HOOK_WAIT} ]; do
        sleep 1
        waited=$((waited + 1))
    done
else
    touch "$shared/out/failed"
fi
cp -r "$root/var/log/debusine" "$shared/out/logs" 2>/dev/null
chroot "$root" sh -x /root/in/inside-stop.sh >"$shared/out/stop.log" 2>&1
status=$?
cp "$root/root/out/"* "$shared/out/" 2>/dev/null
exit $status
"""

    def inside_start(self) -> str:
        """Run in the root: services, nginx, the units' ExecStart lines, a user and a worker."""
        services = {name: parse_service(UNITS / name) for name in (*SERVER_UNITS, WORKER_UNIT)}
        migrate, *long_running = (services[name] for name in SERVER_UNITS)
        units = "\n".join(
            [
                start_script(migrate, "/var/log/debusine/migrate.log", background=False),
                *(
                    start_script(service, f"/var/log/debusine/{service.name}.log", background=True)
                    for service in long_running
                ),
            ]
        )
        worker = start_script(
            services[WORKER_UNIT], f"/var/log/debusine/{WORKER_UNIT}.log", background=True
        )
        whoami = f"https://localhost:{self.https_port}/api/1.0/whoami/"
        return f"""set -eu
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
mkdir -p /root/pids /root/out

# What the packages left, before anything runs.
{{
    getent passwd debusine-server debusine-worker debusine-signing
    grep '^debusine-worker:' /etc/subuid /etc/subgid
    stat -c '%n %U:%G %a' /etc/debusine/server /etc/debusine/server/settings.toml \\
        /var/lib/debusine/server /var/lib/debusine/server/store \\
        /var/lib/debusine/server/secret-key /etc/debusine/worker /etc/debusine/signing \\
        /usr/bin/debusine /usr/bin/debusine-admin /usr/bin/debusine-worker \\
        /usr/bin/debusine-signing /etc/nginx/sites-available/debusine-server.conf
}} >/root/out/facts
# The units enabled on boot (dh_installsystemd's links).
ls /etc/systemd/system/*.wants/ | grep '^debusine' | sort >/root/out/enabled || true
for unit in /lib/systemd/system/debusine*; do cp "$unit" /root/out/; done

# PostgreSQL on its Unix socket only: the network is the host's, whose 5432 is taken (so
# the cluster was made on another port: the socket's name is 5432's, as the packaged URL says).
version=$(ls /etc/postgresql)
sed -i -e "s/^#\\?listen_addresses.*/listen_addresses = ''/" -e "s/^port = .*/port = 5432/" \\
    /etc/postgresql/$version/main/postgresql.conf
pg_ctlcluster "$version" main start
runuser -u postgres -- createuser debusine-server
runuser -u postgres -- createdb --owner debusine-server debusine

# Redis on a spare loopback port.
redis-server --port {self.redis_port} --bind 127.0.0.1 --save '' --appendonly no \\
    --daemonize yes --dir /tmp --logfile /var/log/debusine/redis.log
redis_url="redis://127.0.0.1:{self.redis_port}/0"
sed -i "s|^DEBUSINE_REDIS_URL = .*|DEBUSINE_REDIS_URL = \\"$redis_url\\"|" \\
    /etc/debusine/server/settings.toml

# The test's CA is trusted system-wide; its certificate is where the vhost expects one.
install -m 0644 /root/in/ca.pem /usr/local/share/ca-certificates/debusine-test-ca.crt
update-ca-certificates
install -D -m 0644 /root/in/server.pem /etc/ssl/certs/ssl-cert-snakeoil.pem
install -d -m 0710 /etc/ssl/private
install -m 0600 /root/in/server.key /etc/ssl/private/ssl-cert-snakeoil.key

# The shipped vhost, on unprivileged spare ports (ports below 1024 need the host's root).
sed -e 's/listen 443 ssl http2;/listen {self.https_port} ssl http2;/' \\
    -e 's/listen 80;/listen {self.http_port};/' -e '/listen \\[::\\]/d' \\
    -e 's/server_name debusine.example.org;/server_name localhost;/' \\
    /etc/nginx/sites-available/debusine-server.conf >/etc/nginx/sites-available/debusine-test.conf
rm -f /etc/nginx/sites-enabled/default
ln -s ../sites-available/debusine-test.conf /etc/nginx/sites-enabled/debusine-test.conf
nginx -t
nginx

# The units, as systemd would start them: migrations first.
{units}

tries=0
until curl -fsS -o /dev/null {whoami}; do
    tries=$((tries + 1))
    [ "$tries" -lt 180 ] || {{ echo "the server did not answer through nginx"; exit 1; }}
    sleep 1
done

admin() {{ runuser -u debusine-server -- debusine-admin "$@"; }}
admin create_user tester tester@example.org
admin group create tester-contributors
admin group members tester-contributors --add tester
admin workspace grant_role System contributor tester-contributors
admin create_token tester >/root/out/token

# The worker, configured for the server through nginx, enabled once it has registered.
printf '[General]\\napi-url = https://localhost:{self.https_port}/api\\n' \\
    >/etc/debusine/worker/config.ini
{worker}
tries=0
until [ -s /etc/debusine/worker/token ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 120 ] || {{ echo "the worker did not register"; exit 1; }}
    sleep 1
done
admin worker enable "$(cat /etc/debusine/worker/token)"
"""

    def inside_stop(self) -> str:
        """Run in the root: stop everything, then remove, reinstall and purge the packages."""
        return f"""set -u
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
# Each unit's process group (setsid made each process its group's leader).
for pid in /root/pids/*; do [ -e "$pid" ] && kill -TERM "-$(cat "$pid")"; done
sleep 5
for pid in /root/pids/*; do [ -e "$pid" ] && kill -KILL "-$(cat "$pid")" 2>/dev/null; done
nginx -s stop
pg_ctlcluster "$(ls /etc/postgresql)" main stop
redis-cli -p {self.redis_port} shutdown nosave

set -e
data=/var/lib/debusine/server
state() {{
    sha256sum "$data/secret-key" /etc/debusine/server/settings.toml
    find "$data/store" -type f | sort | xargs -r sha256sum
}}
state >/root/out/state-installed
apt-get remove -y debusine-server debusine-worker debusine-signing debusine-client
state >/root/out/state-removed
apt-get install -y --no-install-recommends /root/debs/*.deb
state >/root/out/state-reinstalled
apt-get purge -y debusine-server debusine-worker debusine-signing debusine-client debusine-common
{{
    find "$data/store" -type f | sort | xargs -r sha256sum
    ls -d /etc/debusine/server /etc/debusine/worker /var/log/debusine/server /usr/lib/debusine \\
        2>&1 || true
}} >/root/out/state-purged
"""


def copy_tree(source: Path, destination: Path) -> None:
    """Copy what the root left (for a failed test's report)."""
    shutil.copytree(source, destination, dirs_exist_ok=True)
