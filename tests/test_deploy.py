"""
The systemd units under deploy/ pass `systemd-analyze verify` and are hardened; the nginx
virtual host passes `nginx -t`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.units import parse_service

UNITS = sorted((Path(__file__).resolve().parents[1] / "deploy" / "systemd").glob("*.*"))
# What a checkout cannot satisfy: the packaged commands and our other units are not installed.
NOT_INSTALLED = re.compile(
    r"is not executable: No such file or directory"
    r"|Unit (debusine-[a-z-]+|postgresql|redis-server)\.service not found"
)


def test_there_are_units() -> None:
    names = {unit.name for unit in UNITS}
    assert {
        "debusine-server.service",
        "debusine-server-migrate.service",
        "debusine-server-scheduler.service",
        "debusine-server-celery.service",
        "debusine-server-periodic-tasks.service",
        "debusine-server-provisioner.service",
        "debusine-worker.service",
        "debusine-signing.service",
        "debusine-signing-migrate.service",
        "debusine-server-delete-expired.service",
        "debusine-server-delete-expired.timer",
        "debusine-server-vacuum-storage.service",
        "debusine-server-vacuum-storage.timer",
    } <= names


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_unit_verifies(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not NOT_INSTALLED.search(line)
    ]
    assert problems == []


def test_the_celery_unit_runs_workflow_orchestrators() -> None:
    unit = Path(__file__).parents[1] / "deploy" / "systemd" / "debusine-server-celery.service"
    assert "--queues celery,workflows " in unit.read_text()


SERVICES = [unit for unit in UNITS if unit.suffix == ".service"]
#: What every server and signing unit has (the worker cannot: see docs/explanation/packaging.md).
HARDENING = {
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize("unit", SERVICES, ids=[unit.name for unit in SERVICES])
def test_unit_is_hardened(unit: Path) -> None:
    settings = parse_service(unit).settings
    if unit.name == "debusine-worker.service":
        # sbuild and the unshare executor need setuid newuidmap and namespaces of their own.
        assert settings["PrivateTmp"] == ["yes"]
        assert settings["ProtectSystem"] == ["full"]
        assert settings["ProtectHome"] == ["yes"]
        assert "NoNewPrivileges" not in settings
        return
    assert {key: settings.get(key, [None])[-1] for key in HARDENING} == HARDENING
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["User"] != ["root"]


@pytest.mark.parametrize("unit", SERVICES, ids=[unit.name for unit in SERVICES])
def test_unit_runs_the_packaged_programs(unit: Path) -> None:
    program = parse_service(unit).exec_start[0]
    assert program.startswith(("/usr/bin/debusine", "/usr/lib/debusine/venv/bin/")), program


def test_gunicorn_workers_are_left_to_its_configuration() -> None:
    # (2 x cores) + 1 by default, DEBUSINE_SERVER_WORKERS otherwise: see gunicorn_config.py.
    command = parse_service(ROOT / "deploy" / "systemd" / "debusine-server.service").exec_start
    assert "--workers" not in command
    assert "python:debusine.server.project.gunicorn_config" in command


ROOT = Path(__file__).resolve().parents[1]
VHOST = ROOT / "deploy" / "nginx" / "debusine-server.conf"


def ensure_nginx() -> None:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "nginx"],
            check=True,
            capture_output=True,
        )


def test_nginx_vhost_passes_nginx_t(tmp_path: Path) -> None:
    ensure_nginx()
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).unlink(missing_ok=True)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-keyout", str(tmp_path / "key.pem"),
            "-out", str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    vhost = (
        VHOST.read_text()
        .replace("/etc/ssl/certs/ssl-cert-snakeoil.pem", str(tmp_path / "cert.pem"))
        .replace("/etc/ssl/private/ssl-cert-snakeoil.key", str(tmp_path / "key.pem"))
        .replace("/var/log/nginx/", f"{tmp_path}/")
    )
    (tmp_path / "vhost.conf").write_text(vhost)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log {tmp_path}/access.log;\n    include {tmp_path}/vhost.conf;\n}}\n"
    )
    result = subprocess.run(
        ["/usr/sbin/nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_nginx_vhost_has_what_the_server_needs() -> None:
    text = VHOST.read_text()
    assert "listen 443 ssl" in text
    assert "location /api/ws/ {" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "client_max_body_size 128m;" in text  # >= DEBUSINE_MAX_UPLOAD_CHUNK_SIZE (64 MiB)
    assert "proxy_read_timeout 3600s;" in text
    assert "proxy_request_buffering off;" in text
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    assert "location /_debusine_store/Default/ {\n        internal;" in text
    assert "server unix:/run/debusine/server.sock" in text
