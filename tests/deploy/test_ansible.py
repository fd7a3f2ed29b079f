"""
The Ansible roles (deploy/ansible/) set up Debian 12 machines from our packages.

Debian's `ansible-playbook` runs the example playbook against two throwaway Debian 12 roots
(the cached `ANSIBLE_TARGET` tarball of tests/deploy/roots.py, extracted afresh), through the
`community.general.chroot` connection: one root is the server, the other a worker and the
signing worker. Our packages come from a flat APT repository made from the built `.deb` files
and put in each root, as an administrator would publish them. The roots have no running
systemd: the roles enable the units (systemctl edits the links itself) and skip only starting
them, which the test checks, with what the roles leave: packages, users, configuration read
back by the installed code, modes, the nginx virtual host (`nginx -t`). A second run changes
nothing. `ansible-lint` (production profile) passes on the playbook and the roles.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.apt_repository import make_flat_repository
from tests.deploy.debian_root import make_certificates
from tests.deploy.packages import built_packages
from tests.deploy.roots import ANSIBLE_TARGET, system_tarball

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ANSIBLE = Path(__file__).resolve().parents[2] / "deploy" / "ansible"
PLAYBOOK_TIMEOUT = 1200
REPOSITORY = "/srv/debusine-apt"
HOSTS = ("server", "worker1")
ACTIVATION_TOKEN = "test-activation-token-0123456789"


def ansible_environment(home: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C.UTF-8",
        "HOME": str(home),
        "ANSIBLE_HOME": str(home / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(home / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }


def test_ansible_lint_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        ["ansible-lint", "--offline", "--profile", "production", "playbook.yml"],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=ansible_environment(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def roots() -> Iterator[dict[str, Path]]:
    """A fresh Debian root per host, with the repository of our packages in it."""
    if os.geteuid() != 0:
        pytest.fail("the chroot connection needs root", pytrace=False)
    tarball = system_tarball(ANSIBLE_TARGET)
    debs = built_packages()
    base = Path(tempfile.mkdtemp(prefix="debusine-ansible-"))
    try:
        made = {}
        for host in HOSTS:
            root = base / host
            root.mkdir()
            subprocess.run(
                ["tar", "--zstd", "--numeric-owner", "-xpf", str(tarball), "-C", str(root)],
                check=True,
            )
            make_flat_repository(debs, root / REPOSITORY.lstrip("/"))
            # As in any chroot: packages' scripts must not start services (nginx would bind
            # this machine's port 80), and names resolve as here.
            policy = root / "usr/sbin/policy-rc.d"
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
            made[host] = root
        certificates = made["server"] / "etc/ssl/debusine"
        certificates.mkdir()
        make_certificates(certificates)
        yield made
    finally:
        shutil.rmtree(base, ignore_errors=True)


def write_inventory(path: Path, roots: dict[str, Path]) -> None:
    """The example playbook's groups; the test's roots and choices as variables."""
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "community.general.chroot",
                "ansible_python_interpreter": "/usr/bin/python3",
                # Already root in the root, which has no sudo.
                "ansible_become": False,
                "debusine_apt_uri": f"file:{REPOSITORY}",
                "debusine_apt_trusted": True,
                # The Recommends (sbuild, lintian...) would be a long download for nothing.
                "debusine_worker_install_recommends": False,
                "debusine_signing_install_recommends": False,
                "debusine_worker_api_url": "https://debusine.example.org/api",
                "debusine_signing_api_url": "https://debusine.example.org/api",
            },
            "children": {
                "debusine_server": {
                    "hosts": {
                        "server": {
                            "ansible_host": str(roots["server"]),
                            "debusine_server_fqdn": "debusine.example.org",
                            "debusine_server_database_url": (
                                "postgresql://debusine@db.example.org/debusine"
                            ),
                            "debusine_server_database_replica_urls": [
                                "postgresql://debusine@replica.example.org/debusine"
                            ],
                            "debusine_server_extra_units": ["debusine-server-celery.service"],
                            "debusine_server_extra_settings": {"DEBUSINE_LOG_LEVEL": "DEBUG"},
                            "debusine_server_nginx_certificate": "/etc/ssl/debusine/server.pem",
                            "debusine_server_nginx_certificate_key": (
                                "/etc/ssl/debusine/server.key"
                            ),
                        }
                    }
                },
                "debusine_workers": {
                    "hosts": {
                        "worker1": {
                            "ansible_host": str(roots["worker1"]),
                            "debusine_worker_activation_token": ACTIVATION_TOKEN,
                        }
                    }
                },
                # Beside the worker: one root fewer to build for the test.
                "debusine_signing": {
                    "hosts": {
                        "worker1": {
                            "debusine_signing_database_url": (
                                "postgresql:///debusine_signing?host=/run/postgresql"
                            ),
                        }
                    }
                },
            },
        }
    }
    path.write_text(json.dumps(inventory, indent=2))


def run_playbook(inventory: Path, home: Path) -> dict[str, Any]:
    """Run the example playbook; its results as the json callback reports them."""
    result = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "playbook.yml"],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        timeout=PLAYBOOK_TIMEOUT,
        check=False,
        env={**ansible_environment(home), "ANSIBLE_STDOUT_CALLBACK": "json"},
    )
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible-playbook: {result.stdout[-5000:]}\n{result.stderr[-5000:]}")
    assert result.returncode == 0, failures(report) or result.stderr[-5000:]
    return report


def failures(report: dict[str, Any]) -> str:
    """The failed tasks of `report`, each host's message and output."""
    lines = []
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                for item in [result, *result.get("results", [])]:
                    if item.get("failed") or item.get("unreachable"):
                        details = {
                            key: item[key]
                            for key in ("msg", "stdout", "stderr", "item")
                            if item.get(key)
                        }
                        lines.append(f"{task['task']['name']} on {host}: {details}")
    return "\n".join(lines)


def task_results(report: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """Each host's result of the task called `name` (every play; "role : name" in reports)."""
    found: dict[str, dict[str, Any]] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].split(" : ", 1)[-1] == name:
                found.update(task["hosts"])
    return found


def chroot(root: Path, *command: str) -> str:
    result = subprocess.run(
        ["chroot", str(root), *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
    )
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


def owner_and_mode(root: Path, path: str) -> str:
    """`user:group mode` of `path` in `root`, names as the root's own files say."""
    return chroot(root, "stat", "-c", "%U:%G %a", path).strip()


def enabled_units(root: Path) -> set[str]:
    return {link.name for link in (root / "etc/systemd/system").glob("*.wants/*")}


def test_playbook_sets_up_a_server_a_worker_and_a_signing_worker(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yml"
    write_inventory(inventory, roots)
    report = run_playbook(inventory, tmp_path / "home")
    for host in HOSTS:
        assert report["stats"][host]["failures"] == 0
        assert report["stats"][host]["changed"] > 0

    the_units_were_enabled_but_not_started(report, roots)
    the_server_is_installed_and_configured(roots["server"])
    the_signing_worker_is_installed_and_configured(roots["worker1"])
    the_worker_is_installed_and_configured(roots["worker1"])

    again = run_playbook(inventory, tmp_path / "home")
    assert {host: again["stats"][host]["changed"] for host in HOSTS} == dict.fromkeys(HOSTS, 0)


def the_units_were_enabled_but_not_started(report: dict[str, Any], roots: dict[str, Path]) -> None:
    for name in (
        "Run the migrations, then start the server units",
        "Start the worker",
        "Run the signing database's migrations, then start the signing worker",
    ):
        results = task_results(report, name)
        assert results, name
        assert all(result.get("skipped") for result in results.values()), (name, results)
    assert task_results(report, "Enable the server units")["server"].get("failed") is None
    assert {
        "debusine-server-migrate.service",
        "debusine-server.service",
        "debusine-server-scheduler.service",
        "debusine-server-provisioner.service",
        "debusine-server-delete-expired.timer",
        "debusine-server-vacuum-storage.timer",
        # Not enabled by the package: only the role's variable enabled it.
        "debusine-server-celery.service",
        "nginx.service",
    } <= enabled_units(roots["server"])
    assert "debusine-server-periodic-tasks.service" not in enabled_units(roots["server"])
    assert not {"debusine-worker.service", "debusine-signing.service"} & enabled_units(
        roots["server"]
    )
    worker_units = {unit for unit in enabled_units(roots["worker1"]) if "debusine" in unit}
    assert worker_units == {
        "debusine-worker.service",
        "debusine-signing-migrate.service",
        "debusine-signing.service",
    }


def installed_packages(root: Path) -> set[str]:
    listing = chroot(root, "dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n")
    return {line.split()[0] for line in listing.splitlines() if line.endswith(" installed")}


def the_server_is_installed_and_configured(root: Path) -> None:
    assert {"debusine-common", "debusine-server", "debusine-client", "nginx"} <= (
        installed_packages(root)
    )
    assert not {"debusine-worker", "debusine-signing"} & installed_packages(root)
    chroot(root, "getent", "passwd", "debusine-server")
    assert owner_and_mode(root, "/etc/debusine/server/settings.toml") == "root:debusine-server 640"
    # Read back by the installed code, as the server reads it.
    settings = json.loads(
        chroot(
            root,
            "/usr/lib/debusine/venv/bin/python",
            "-c",
            "import json; "
            "from debusine.server.project.settings_loader import declared_settings; "
            "print(json.dumps(declared_settings({}), default=str))",
        )
    )
    assert settings["DEBUSINE_FQDN"] == "debusine.example.org"
    assert settings["DEBUSINE_DATABASE_URL"] == "postgresql://debusine@db.example.org/debusine"
    assert settings["DEBUSINE_DATABASE_REPLICA_URLS"] == [
        "postgresql://debusine@replica.example.org/debusine"
    ]
    assert settings["DEBUSINE_LOG_LEVEL"] == "DEBUG"
    assert settings["DEBUSINE_MULTI_SERVER"] is False
    assert settings["DEBUSINE_X_ACCEL_REDIRECT_LOCATION"] == "/_debusine_store"

    vhost = (root / "etc/nginx/sites-available/debusine-server.conf").read_text()
    assert "server_name debusine.example.org;" in vhost
    assert "ssl_certificate /etc/ssl/debusine/server.pem;" in vhost
    assert os.readlink(root / "etc/nginx/sites-enabled/debusine-server.conf") == (
        "../sites-available/debusine-server.conf"
    )
    assert not (root / "etc/nginx/sites-enabled/default").exists()
    chroot(root, "nginx", "-t")


def the_signing_worker_is_installed_and_configured(root: Path) -> None:
    chroot(root, "getent", "passwd", "debusine-signing")
    for path in ("config.ini", "settings.toml", "0.key"):
        assert owner_and_mode(root, f"/etc/debusine/signing/{path}") == (
            "debusine-signing:debusine-signing 600"
        ), path
    settings = json.loads(
        chroot(
            root,
            "/usr/lib/debusine/venv/bin/python",
            "-c",
            "import json; from debusine.signing.settings.loader import signing_settings; "
            "print(json.dumps(signing_settings({}), default=str))",
        )
    )
    assert settings["DEBUSINE_SIGNING_DATABASE_URL"] == (
        "postgresql:///debusine_signing?host=/run/postgresql"
    )
    assert settings["DEBUSINE_SIGNING_SERVICE_KEYS"] == ["/etc/debusine/signing/0.key"]
    config = configparser.ConfigParser()
    config.read(root / "etc/debusine/signing/config.ini")
    assert config["General"]["api-url"] == "https://debusine.example.org/api"


def the_worker_is_installed_and_configured(root: Path) -> None:
    assert {"debusine-common", "debusine-worker", "debusine-signing"} <= installed_packages(root)
    assert not {"debusine-server", "nginx"} & installed_packages(root)
    passwd = chroot(root, "getent", "passwd", "debusine-worker")
    assert passwd.split(":")[5] == "/var/lib/debusine-worker"
    assert "debusine-worker:" in (root / "etc/subuid").read_text()
    config = configparser.ConfigParser()
    config.read(root / "etc/debusine/worker/config.ini")
    assert config["General"]["api-url"] == "https://debusine.example.org/api"
    assert owner_and_mode(root, "/etc/debusine/worker/config.ini") == (
        "debusine-worker:debusine-worker 640"
    )
    token = root / "etc/debusine/worker/activation-token"
    assert token.read_text() == f"{ACTIVATION_TOKEN}\n"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert owner_and_mode(root, "/etc/debusine/worker/activation-token") == (
        "debusine-worker:debusine-worker 600"
    )
