"""The trusted certificates guard (Django-free)."""

from __future__ import annotations

import pytest

from debusine.signing.policy import PolicyError, check_trusted_certs

PRODUCTION = "AA" * 32
TEST = "bb:" * 31 + "bb"


def test_inputs_trusting_only_allowed_certificates_pass() -> None:
    check_trusted_certs([], [])
    check_trusted_certs([PRODUCTION.lower()], [PRODUCTION])


def test_input_trusting_a_certificate_outside_the_allow_list_is_refused() -> None:
    with pytest.raises(PolicyError, match=f"outside DEBUSINE_SIGNING_TRUSTED_CERTS: {'BB' * 32}$"):
        check_trusted_certs([PRODUCTION, TEST], [PRODUCTION])
    with pytest.raises(PolicyError):
        check_trusted_certs([PRODUCTION], [])
