"""Fixtures of the signing tests: a throwaway signing database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from debusine.testing.signing import SigningInstance, signing_instance


@pytest.fixture
def signing(tmp_path: Path) -> Iterator[SigningInstance]:
    """A migrated signing database with a service key, used through subprocesses only."""
    from django.conf import settings

    with signing_instance(
        postgres_url=settings.DEBUSINE_DATABASE_URL, directory=tmp_path / "signing"
    ) as instance:
        yield instance
