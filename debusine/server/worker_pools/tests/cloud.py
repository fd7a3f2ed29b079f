"""
An in-memory cloud implementing the provider interface, for tests of the allocation rules.

It stands for the remote API of a cloud (which tests cannot reach), not for our code: the
`local` provider's own tests and the end-to-end tests start real worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from debusine.server.worker_pools.providers.base import (
    CapacityError,
    LaunchedInstance,
    LaunchRequest,
    RunningInstance,
)


@dataclass
class CloudDouble:
    running: dict[str, RunningInstance] = field(default_factory=dict)
    pools: dict[str, str] = field(default_factory=dict)  # instance id -> pool
    launches: list[LaunchRequest] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    #: Launches fail with CapacityError while this is set.
    out_of_capacity: bool = False
    next_id: int = 1

    def launch(self, request: LaunchRequest) -> LaunchedInstance:
        if self.out_of_capacity:
            raise CapacityError("no capacity in any of the specification's choices")
        instance_id = f"i-{self.next_id:04d}"
        self.next_id += 1
        self.launches.append(request)
        self.running[instance_id] = RunningInstance(instance_id, request.worker_name)
        self.pools[instance_id] = request.pool_name
        return LaunchedInstance(instance_id)

    def terminate(self, instance_id: str) -> None:
        self.terminated.append(instance_id)
        self.running.pop(instance_id, None)

    def list_running(self, pool_name: str) -> list[RunningInstance]:
        return [item for key, item in self.running.items() if self.pools.get(key) == pool_name]

    def interrupt(self, instance_id: str) -> None:
        item = self.running[instance_id]
        self.running[instance_id] = RunningInstance(item.instance_id, item.worker_name, True)

    def leak(self, pool_name: str) -> str:
        instance_id = f"i-leak{self.next_id}"
        self.next_id += 1
        self.running[instance_id] = RunningInstance(instance_id, None)
        self.pools[instance_id] = pool_name
        return instance_id
