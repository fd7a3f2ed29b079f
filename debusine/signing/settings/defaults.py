"""
Every setting of the signing service a deployment may change, with its default and meaning.

Override any of them in `/etc/debusine/signing/settings.toml` (top-level keys with the names
below; another file with `DEBUSINE_SIGNING_SETTINGS_FILE`) or with an environment variable of
the same name. Lists are comma-separated in the environment. `docs/reference/signing.md` lists
the same settings for operators.
"""

from pathlib import Path

# PostgreSQL URL of the signing database, e.g. `postgresql:///debusine_signing?host=/run/postgresql`.
# It must never be the server's database: only signing workers may reach it.
DEBUSINE_SIGNING_DATABASE_URL = "postgresql://127.0.0.1:5432/debusine_signing"

# Service key files (Curve25519 private keys made by `debusine-signing generate_service_key`).
# The first one encrypts new software keys; every one is tried to decrypt, so a new key can be
# put first while keys encrypted under the old ones remain usable (rotation). Each file must be
# readable by its owner only.
DEBUSINE_SIGNING_SERVICE_KEYS = [Path("/etc/debusine/signing/0.key")]

# Key algorithm of new UEFI keys, as openssl's `-newkey` takes it (`rsa:2048`, `rsa:4096`,
# `ec:<curve parameters file>` is not supported: RSA only, as shim and sbsign expect).
DEBUSINE_SIGNING_UEFI_KEY_ALGORITHM = "rsa:2048"

# Validity of new UEFI certificates, in days.
DEBUSINE_SIGNING_UEFI_CERTIFICATE_DAYS = 15 * 365

# Algorithm of new OpenPGP keys, as `gpg --quick-generate-key` takes it (`ed25519`, `rsa4096`).
DEBUSINE_SIGNING_OPENPGP_KEY_ALGORITHM = "ed25519"

# Expiry of new OpenPGP keys, as gpg takes it (`never`, `2y`, `365d`, an ISO date).
DEBUSINE_SIGNING_OPENPGP_EXPIRY = "never"

# Logging level of the signing commands and the signing worker.
DEBUSINE_SIGNING_LOG_LEVEL = "INFO"

# The PKCS#11 module of the HSM holding `pkcs11-static` keys (SoftHSM2's for tests).
DEBUSINE_SIGNING_PKCS11_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")

# Where `generatekey` and `debusine-signing key generate` make new uefi and kmod keys: empty,
# in software (sealed with the service key); else the PKCS#11 URI of a token with its PIN source,
# e.g. `pkcs11:token=signing?pin-source=file:/etc/debusine/signing/pin`, to generate them
# inside the HSM (RSA of DEBUSINE_SIGNING_UEFI_KEY_ALGORITHM's size, never extractable).
# OpenPGP keys are always software keys (see docs/reference/signing.md).
DEBUSINE_SIGNING_PKCS11_GENERATE_TOKEN = ""

# How many signing operations of this machine may use one PKCS#11 token at once (an HSM serves
# a limited number of sessions), how long one waits for a free session (seconds) before it is
# refused, and where the per-session lock files live.
DEBUSINE_SIGNING_PKCS11_MAX_SESSIONS = 4
DEBUSINE_SIGNING_PKCS11_SESSION_WAIT = 30.0
DEBUSINE_SIGNING_LOCK_DIRECTORY = Path("/run/debusine-signing")

# SHA-256 fingerprints of the certificates a signed object may trust: a `sign` input whose
# `trusted_certs` names any other certificate is refused (so production keys never sign
# objects that trust test certificates). Comma-separated in the environment.
DEBUSINE_SIGNING_TRUSTED_CERTS: list[str] = []

# Signatures one key may make per minute (all signing events together); 0: no limit. A burst
# beyond it is refused with a clear error, so a compromised caller cannot drain a key.
DEBUSINE_SIGNING_RATE_LIMIT_PER_MINUTE = 0
