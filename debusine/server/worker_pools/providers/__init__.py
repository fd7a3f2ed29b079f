"""Cloud providers behind one small interface (`base.Provider`); `get_provider` picks one."""

from __future__ import annotations

from typing import Any

from debusine.server.worker_pools.providers.base import Provider, ProviderError


def get_provider(account: Any, specification: Any, *, data_dir: str) -> Provider:
    """The provider for a pool: its account (`specs.CloudProviderAccount`) and specification."""
    if account.provider_type == "local":
        from debusine.server.worker_pools.providers.local import LocalProvider

        return LocalProvider(specification, data_dir=data_dir)
    if account.provider_type == "aws":
        from debusine.server.worker_pools.providers.aws import AwsProvider

        return AwsProvider(account, specification)
    if account.provider_type == "hetzner":
        from debusine.server.worker_pools.providers.hetzner import HetznerProvider

        return HetznerProvider(account, specification)
    raise ProviderError(f"provider {account.provider_type!r} is not available on this server")
