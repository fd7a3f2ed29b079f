"""
A throwaway signing service: its own database, service key and `debusine-signing` commands.

The signing side is a Django project of its own, so tests never load its settings into the test
process (pytest-django holds the server's): they create a fresh database on the same
PostgreSQL server, run `debusine-signing migrate` and every other signing command as
subprocesses with `DEBUSINE_SIGNING_DATABASE_URL` pointing at it, and read or tamper with it
over plain psycopg connections. Benchmarks use the same helper.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from debusine.server.project import instance
from debusine.testing.embedded import drop_database, ensure_database_exists
from debusine.testing.worker import WorkerProcess, write_worker_config


class SigningCommandError(Exception):
    """A `debusine-signing` command failed where the caller expected success."""


@dataclass
class SigningInstance:
    """A migrated signing database and the environment of processes that use it."""

    database_url: str
    directory: Path
    environment: dict[str, str] = field(repr=False)

    @property
    def service_key(self) -> Path:
        """The first (sealing) service key file."""
        return Path(self.environment["DEBUSINE_SIGNING_SERVICE_KEYS"].split(",")[0])

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `debusine-signing ARGS`; raise SigningCommandError on failure when `check`."""
        command = [sys.executable, "-m", "debusine.signing.main", *args]
        result = subprocess.run(
            command, env=self.environment, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise SigningCommandError(
                f"debusine-signing {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result


def signing_environment(
    database_url: str, directory: Path, service_keys: list[Path]
) -> dict[str, str]:
    """Environment of signing processes: this database, these keys, no settings file."""
    return {
        **os.environ,
        "DEBUSINE_SIGNING_DATABASE_URL": database_url,
        "DEBUSINE_SIGNING_SERVICE_KEYS": ",".join(str(path) for path in service_keys),
        "DEBUSINE_SIGNING_SETTINGS_FILE": str(directory / "no-settings.toml"),
        # gpg and friends must not find a developer's configuration.
        "HOME": str(directory / "home"),
    }


@contextmanager
def signing_instance(
    *, postgres_url: str, directory: Path, name_prefix: str = "debusine_signing"
) -> Iterator[SigningInstance]:
    """
    Create and migrate a signing database on the PostgreSQL server of `postgres_url` (only its
    server part matters) with a fresh service key in `directory`; drop it at the end.
    """
    name = f"{name_prefix}_{uuid.uuid4().hex[:8]}"
    database_url = instance.with_database_name(postgres_url, name)
    (directory / "home").mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = directory / "0.key"
    signing = SigningInstance(
        database_url, directory, signing_environment(database_url, directory, [key_path])
    )
    ensure_database_exists(database_url)
    try:
        signing.run("generate_service_key", str(key_path))
        signing.run("migrate", "--no-input", "-v", "0")
        yield signing
    finally:
        drop_database(database_url)


def build_efi_binary(path: Path) -> Path:
    """
    Write a minimal x86-64 EFI application (PE/COFF) to `path`, for sbsign and sbverify:
    an empty `_start` compiled and linked with gcc and ld, converted by objcopy.
    """
    work = path.parent / f".{path.name}.build"
    work.mkdir(parents=True, exist_ok=True)
    (work / "start.c").write_text("void _start(void) {}\n")
    for command in (
        ["gcc", "-c", "-fPIC", "-fno-stack-protector", "-o", "start.o", "start.c"],
        ["ld", "-shared", "-Bsymbolic", "-nostdlib", "-o", "start.so", "start.o"],
        ["objcopy", "--target=efi-app-x86_64", "start.so", str(path.absolute())],
    ):
        subprocess.run(command, cwd=work, check=True, capture_output=True)
    return path


def build_kernel_module(path: Path, name: str = "debusine_test") -> Path:
    """
    Write a minimal kernel module to `path`: an ELF relocatable object with the `.modinfo`
    section `modinfo` reads (enough for sign-file, modinfo and the checks of the tests).
    """
    work = path.parent / f".{path.name}.build"
    work.mkdir(parents=True, exist_ok=True)
    (work / "module.c").write_text(
        'static const char license[] __attribute__((section(".modinfo"), used)) ='
        ' "license=GPL";\n'
        f'static const char name[] __attribute__((section(".modinfo"), used)) = "name={name}";\n'
        "int init_module(void) { return 0; }\n"
    )
    subprocess.run(
        ["gcc", "-c", "-o", str(path.absolute()), "module.c"],
        cwd=work,
        check=True,
        capture_output=True,
    )
    return path


#: What ends a signed kernel module (the kernel's MODULE_SIG_STRING).
MODULE_SIGNATURE_MAGIC = b"~Module signature appended~\n"


def verify_kernel_module(module: Path, certificate: Path) -> subprocess.CompletedProcess[str]:
    """
    Check the signature appended to `module` as the kernel does: split the module into its
    content and its PKCS#7 signature (the `struct module_signature` trailer says how long it
    is), then have `openssl cms -verify` check the signature over the content with
    `certificate`. Raise AssertionError if there is no signature trailer at all.
    """
    data = module.read_bytes()
    assert data.endswith(MODULE_SIGNATURE_MAGIC), f"{module} has no appended signature"
    trailer = data[: -len(MODULE_SIGNATURE_MAGIC)]
    # struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len.
    info, signature_length = trailer[-12:-4], int.from_bytes(trailer[-4:], "big")
    assert info[2] == 2, "not a PKCS#7 signature (id_type)"
    signature = trailer[-12 - signature_length : -12]
    content = trailer[: -12 - signature_length]
    work = module.parent / f".{module.name}.verify"
    work.mkdir(exist_ok=True)
    (work / "content").write_bytes(content)
    (work / "signature.p7s").write_bytes(signature)
    return subprocess.run(
        [
            "openssl", "cms", "-verify", "-binary", "-inform", "DER",
            "-in", str(work / "signature.p7s"), "-content", str(work / "content"),
            "-certfile", str(certificate), "-CAfile", str(certificate), "-purpose", "any",
            "-out", "/dev/null",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class SoftHsmKey:
    """An RSA key and its certificate imported into a fresh SoftHSM2 token."""

    config: Path  # SOFTHSM2_CONF of the token directory
    uri: str  # PKCS#11 URI with pin-source
    certificate: Path
    pin_file: Path

    @property
    def environment(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.config)}


def softhsm_key(
    directory: Path,
    *,
    label: str = "uefi",
    token: str = "signing",  # noqa: S107 (a label)
) -> SoftHsmKey:
    """
    Initialise a SoftHSM2 token in `directory` and put a new UEFI key (generated by openssl,
    imported with pkcs11-tool) and its certificate in it; the PIN is in an owner-only file.
    """
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    config = directory / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    environment = {**os.environ, "SOFTHSM2_CONF": str(config)}
    pin = "1234"
    pin_file = directory / "pin"
    pin_file.write_text(pin)
    pin_file.chmod(0o600)

    def run(*command: str) -> None:
        subprocess.run(command, env=environment, cwd=directory, check=True, capture_output=True)

    run(
        "softhsm2-util",
        "--init-token",
        "--free",
        "--label",
        token,
        "--so-pin",
        "5678",
        "--pin",
        pin,
    )
    run(
        "openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-noenc", "-keyout", "key.pem",
        "-out", "certificate.pem", "-days", "365", "-subj", f"/CN={label} in SoftHSM/",
    )  # fmt: skip
    run(
        "openssl",
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "key.pem",
        "-outform",
        "DER",
        "-out",
        "key.der",
    )
    for what, path in (("privkey", "key.der"),):
        run(
            "pkcs11-tool", "--module", str(SOFTHSM_MODULE), "--token-label", token, "--login",
            "--pin", pin, "--write-object", path, "--type", what, "--label", label, "--id", "01",
            "--usage-sign",
        )  # fmt: skip
    # The private key exists only in the token from now on.
    (directory / "key.pem").unlink()
    (directory / "key.der").unlink()
    return SoftHsmKey(
        config=config,
        uri=f"pkcs11:token={token};object={label};type=private?pin-source=file:{pin_file}",
        certificate=directory / "certificate.pem",
        pin_file=pin_file,
    )


def start_signing_worker(
    signing: SigningInstance,
    api_url: str,
    directory: Path,
    *,
    activation_token: str,
    environment: dict[str, str] | None = None,
) -> WorkerProcess:
    """
    Start `debusine-signing signing_worker` on `signing`'s database for the server at
    `api_url`, with its configuration in `directory/config/` and its log in
    `directory/worker.log`; stop it with `.stop()`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config_dir = write_worker_config(
        directory / "config", api_url, activation_token=activation_token
    )
    log_file = directory / "worker.log"
    output_file = directory / "worker.out"
    command = [
        sys.executable, "-m", "debusine.signing.main", "signing_worker",
        "--config-dir", str(config_dir), "--log-file", str(log_file), "--log-level", "DEBUG",
    ]  # fmt: skip
    with open(output_file, "ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**signing.environment, **(environment or {})},
            start_new_session=True,
        )
    return WorkerProcess(process, config_dir, log_file, output_file)
