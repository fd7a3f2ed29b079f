"""
Signatures per second through the signing service, and its overhead over the bare tools.

Sets up a throwaway signing database (`debusine.testing.signing`), generates an OpenPGP, a
UEFI and a kernel module (kmod) software key, imports a UEFI key into a SoftHSM2 token, then
signs the same small file `--count` times each way:

- `bare`: the tool alone, with the key already where it needs it (a GnuPG home holding the
  key; a PEM key file; the PKCS#11 URI), as a script calling gpg, sbsign or the kernel's
  sign-file would;
- `ours`: `debusine.signing.operations.sign_file`, in this process as the signing worker calls
  it: load and check the key row, unseal the private key (or check the PIN file), put it in a
  private temporary directory (import into a throwaway GnuPG home for OpenPGP), run the tool,
  hash input and output, append the hash-chained audit row, move the result into place.

It prints signatures per second for each, and our overhead per signature (ours - bare).

Usage: `.venv/bin/python -m bench.signing [--count 20]`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from debusine.testing.signing import build_efi_binary, signing_instance, softhsm_key

POSTGRES_URL = os.environ.get("DEBUSINE_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")


def timed(count: int, operation: Callable[[int], None]) -> float:
    """Seconds per call of `operation(i)`, over `count` calls after one warm-up call."""
    operation(-1)
    start = time.perf_counter()
    for index in range(count):
        operation(index)
    return (time.perf_counter() - start) / count


def report(name: str, bare: float, ours: float) -> None:
    print(
        f"{name:<22} bare {1 / bare:7.1f} sig/s ({bare * 1000:6.1f} ms)"
        f"   ours {1 / ours:7.1f} sig/s ({ours * 1000:6.1f} ms)"
        f"   overhead {(ours - bare) * 1000:6.1f} ms/sig ({ours / bare:4.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--count", type=int, default=20, help="signatures per measurement")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-signing-"))
    hsm = softhsm_key(work / "hsm")
    with signing_instance(postgres_url=POSTGRES_URL, directory=work / "signing") as signing:
        signing.environment.update(hsm.environment)
        openpgp = signing.run("key", "generate", "openpgp", "Bench <b@example.org>").stdout.strip()
        uefi = signing.run("key", "generate", "uefi", "Bench UEFI").stdout.strip()
        kmod = signing.run("key", "generate", "kmod", "Bench modules").stdout.strip()
        pkcs11 = signing.run(
            "register_pkcs11_static_key", "uefi", hsm.uri, str(hsm.certificate), "Bench HSM"
        ).stdout.strip()
        # From here on this process is a signing process: the signing settings, in-process.
        os.environ.update(signing.environment)
        os.environ["DJANGO_SETTINGS_MODULE"] = "debusine.signing.settings"
        import django

        django.setup()
        measure(args.count, work, openpgp, uefi, pkcs11, hsm.certificate)
        measure_kmod(args.count, work, kmod)
        print("(shared machine: absolute figures are noisy; compare within a run)")
        from django.db import connection

        connection.close()


def measure(
    count: int, work: Path, openpgp: str, uefi: str, pkcs11: str, hsm_certificate: Path
) -> None:
    from debusine.signing.key_store import configured_service_keys, find_key
    from debusine.signing.models import KeyPurpose
    from debusine.signing.operations import sign_file, usable_material
    from debusine.signing.signers import SigningMode, SoftwareKey, gpg_argv

    service_keys = configured_service_keys()
    release = work / "Release"
    release.write_text("Origin: Bench\nSuite: unstable\n" + "X: y\n" * 200)
    binary = build_efi_binary(work / "bench.efi")
    out = work / "out"
    out.mkdir()

    # --- OpenPGP detached ---------------------------------------------------------------
    material = usable_material(find_key(KeyPurpose.OPENPGP, openpgp), service_keys)
    assert isinstance(material, SoftwareKey)
    home = work / "gnupg"
    home.mkdir(mode=0o700)
    (work / "secret.asc").write_bytes(material.private_key)
    subprocess.run(
        gpg_argv(home, "--import", str(work / "secret.asc")), check=True, capture_output=True
    )

    def bare_gpg(index: int) -> None:
        subprocess.run(
            gpg_argv(home, "--yes", "--local-user", openpgp, "--detach-sign", "--armor",
                     "--output", str(out / f"bare-{index}.asc"), str(release)),
            check=True, capture_output=True,
        )  # fmt: skip

    def ours_gpg(index: int) -> None:
        sign_file(
            KeyPurpose.OPENPGP, [openpgp], release, out / f"ours-{index}.asc",
            SigningMode.DETACHED, created_by="bench", service_keys=service_keys,
        )  # fmt: skip

    report("openpgp detached", timed(count, bare_gpg), timed(count, ours_gpg))

    # --- UEFI, software key -------------------------------------------------------------
    material = usable_material(find_key(KeyPurpose.UEFI, uefi), service_keys)
    assert isinstance(material, SoftwareKey)
    (work / "key.pem").write_bytes(material.private_key)
    (work / "cert.pem").write_bytes(material.public_key)

    def bare_sbsign(index: int) -> None:
        subprocess.run(
            ["sbsign", "--key", str(work / "key.pem"), "--cert", str(work / "cert.pem"),
             "--output", str(out / f"bare-{index}.efi"), str(binary)],
            check=True, capture_output=True,
        )  # fmt: skip

    def ours_sbsign(index: int) -> None:
        sign_file(
            KeyPurpose.UEFI, [uefi], binary, out / f"ours-{index}.efi",
            SigningMode.ATTACHED, created_by="bench", service_keys=service_keys,
        )  # fmt: skip

    report("uefi software key", timed(count, bare_sbsign), timed(count, ours_sbsign))

    # --- UEFI, SoftHSM2 key -------------------------------------------------------------
    key = find_key(KeyPurpose.UEFI, pkcs11)
    uri = key.protected.model_dump()["pkcs11_uri"]
    environment = {**os.environ, "PKCS11_MODULE_PATH": "/usr/lib/softhsm/libsofthsm2.so"}

    def bare_hsm(index: int) -> None:
        subprocess.run(
            ["sbsign", "--engine", "pkcs11", "--key", uri, "--cert", str(hsm_certificate),
             "--output", str(out / f"bare-hsm-{index}.efi"), str(binary)],
            check=True, capture_output=True, env=environment,
        )  # fmt: skip

    def ours_hsm(index: int) -> None:
        sign_file(
            KeyPurpose.UEFI, [pkcs11], binary, out / f"ours-hsm-{index}.efi",
            SigningMode.ATTACHED, created_by="bench", service_keys=service_keys,
        )  # fmt: skip

    report("uefi SoftHSM2 key", timed(count, bare_hsm), timed(count, ours_hsm))


#: The kernel's module signing tool in Debian 12.
SIGN_FILE = "/usr/lib/linux-kbuild-6.1/scripts/sign-file"


def measure_kmod(count: int, work: Path, kmod: str) -> None:
    from debusine.signing.key_store import configured_service_keys, find_key
    from debusine.signing.models import KeyPurpose
    from debusine.signing.operations import sign_file, usable_material
    from debusine.signing.signers import SigningMode, SoftwareKey
    from debusine.testing.signing import build_kernel_module

    service_keys = configured_service_keys()
    module = build_kernel_module(work / "bench.ko")
    material = usable_material(find_key(KeyPurpose.KMOD, kmod), service_keys)
    assert isinstance(material, SoftwareKey)
    (work / "kmod.pem").write_bytes(material.private_key)
    (work / "kmod-cert.pem").write_bytes(material.public_key)
    out = work / "out"

    def bare_sign_file(index: int) -> None:
        subprocess.run(
            [SIGN_FILE, "sha256", str(work / "kmod.pem"), str(work / "kmod-cert.pem"),
             str(module), str(out / f"bare-{index}.ko")],
            check=True, capture_output=True,
        )  # fmt: skip

    def ours_kmod(index: int) -> None:
        sign_file(
            KeyPurpose.KMOD, [kmod], module, out / f"ours-{index}.ko",
            SigningMode.ATTACHED, created_by="bench", service_keys=service_keys,
        )  # fmt: skip

    report("kmod software key", timed(count, bare_sign_file), timed(count, ours_kmod))


if __name__ == "__main__":
    main()
