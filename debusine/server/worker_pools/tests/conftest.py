"""Pools for the provisioner's tests, on an in-memory cloud (`CloudDouble`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from debusine.server.db.models import Asset, AssetCategory, WorkerPool
from debusine.server.worker_pools.tests.cloud import CloudDouble


@pytest.fixture
def cloud() -> CloudDouble:
    return CloudDouble()


@pytest.fixture
def make_pool(db: None) -> Callable[..., WorkerPool]:
    def make(name: str = "pool", *, ephemeral: bool = False, **limits: Any) -> WorkerPool:
        account = Asset.objects.filter(data__name="local").first() or Asset.objects.create(
            category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
            data={
                "provider_type": "local",
                "name": "local",
                "configuration": {},
                "credentials": {},
            },
        )
        pool = WorkerPool(
            name=name,
            provider_account=account,
            architectures=["amd64"],
            specifications={"provider_type": "local", "api_url": "http://127.0.0.1:1/api"},
            limits=limits,
            ephemeral=ephemeral,
        )
        pool.full_clean()
        pool.save()
        return pool

    return make
