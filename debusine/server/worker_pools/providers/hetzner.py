"""
The `hetzner` provider: Hetzner Cloud servers through the `hcloud` library.

A launch tries each server type in order, in each location in order (capacity fallback:
`resource_unavailable` and similar answers move on to the next choice; when none is left the
launch fails with a capacity error and the pool retries later). Servers carry the labels
`debusine-worker-pool` and `debusine-worker` (plus the pool's), and cloud-init user data that
writes the worker's configuration and its fresh activation token. Hetzner has no spot
instances: there are no interruption notices.
"""

from __future__ import annotations

from typing import Any

from debusine.server.db.worker_pool_specs import CloudProviderAccount, HetznerSpecification
from debusine.server.worker_pools.providers.base import (
    POOL_TAG,
    WORKER_TAG,
    CapacityError,
    LaunchedInstance,
    LaunchRequest,
    ProviderError,
    RunningInstance,
    user_data,
)

#: Error codes that mean "not here, not now": try the next choice, or later.
CAPACITY_CODES = frozenset({"resource_unavailable", "placement_error", "server_limit_exceeded"})
CREDENTIAL_CODES = frozenset({"unauthorized", "forbidden", "token_readonly"})


class HetznerProvider:
    def __init__(self, account: CloudProviderAccount, specification: HetznerSpecification) -> None:
        try:
            from hcloud import Client
        except ImportError:
            raise ProviderError(
                "the hetzner provider needs the hcloud library (the 'hetzner' extra)"
            ) from None
        self.account = account
        self.specification = specification
        endpoint = account.configuration.hetzner_endpoint_url or "https://api.hetzner.cloud/v1"
        self.client: Any = Client(
            token=account.credentials.get("api_token", ""),
            api_endpoint=endpoint,
            application_name="debusine",
            poll_max_retries=1,
        )

    def _error(self, error: Exception, doing: str) -> ProviderError:
        from hcloud import APIException

        if isinstance(error, APIException):
            code = str(error.code)
            if code in CREDENTIAL_CODES:
                return ProviderError(
                    f"Hetzner refused the API token of account {self.account.name} ({code}): "
                    f"{error.message}"
                )
            if code in CAPACITY_CODES:
                return CapacityError(f"Hetzner has no capacity to {doing} ({code})")
            return ProviderError(
                f"Hetzner account {self.account.name}: cannot {doing} ({code}): {error.message}"
            )
        return ProviderError(f"Hetzner account {self.account.name}: cannot {doing}: {error}")

    def launch(self, request: LaunchRequest) -> LaunchedInstance:
        from hcloud import APIException
        from hcloud.images import Image
        from hcloud.locations import Location
        from hcloud.networks import Network
        from hcloud.server_types import ServerType
        from hcloud.servers import ServerCreatePublicNetwork
        from hcloud.ssh_keys import SSHKey

        spec = self.specification
        labels = {
            **spec.labels,
            **request.tags,
            POOL_TAG: request.pool_name,
            WORKER_TAG: request.worker_name,
        }
        text = user_data(
            api_url=spec.api_url,
            activation_token=request.activation_token,
            install_source=spec.debusine_install_source,
            debian_release=spec.debian_release,
            repository_url=spec.debusine_repository_url,
        )
        shortages = []
        for server_type in spec.server_types:
            locations: list[str | None] = [*spec.locations] or [None]
            for location in locations:
                try:
                    created = self.client.servers.create(
                        name=request.worker_name,
                        server_type=ServerType(name=server_type),
                        image=Image(name=spec.image_name),
                        location=Location(name=location) if location else None,
                        ssh_keys=[SSHKey(name=key) for key in spec.ssh_keys] or None,
                        networks=[Network(id=network) for network in spec.networks] or None,
                        user_data=text,
                        labels=labels,
                        public_net=ServerCreatePublicNetwork(
                            enable_ipv4=spec.enable_ipv4, enable_ipv6=spec.enable_ipv6
                        ),
                    )
                except (APIException, OSError) as error:
                    problem = self._error(error, f"launch {server_type} in {location or 'any'}")
                    if isinstance(problem, CapacityError):
                        shortages.append(str(problem))
                        continue
                    raise problem from None
                return LaunchedInstance(
                    str(created.server.id),
                    {"server_type": server_type, "location": location},
                )
        raise CapacityError("; ".join(shortages))

    def terminate(self, instance_id: str) -> None:
        from hcloud import APIException
        from hcloud.servers import Server

        try:
            self.client.servers.delete(Server(id=int(instance_id)))
        except APIException as error:
            if error.code == "not_found":
                return
            raise self._error(error, f"delete server {instance_id}") from None
        except OSError as error:
            raise self._error(error, f"delete server {instance_id}") from None

    def list_running(self, pool_name: str) -> list[RunningInstance]:
        from hcloud import APIException

        try:
            servers = self.client.servers.get_all(label_selector=f"{POOL_TAG}={pool_name}")
        except (APIException, OSError) as error:
            raise self._error(error, "list the pool's servers") from None
        return [
            RunningInstance(str(server.id), (server.labels or {}).get(WORKER_TAG))
            for server in servers
            if server.status not in ("deleting",)
        ]
