"""What a pool's tags let its workers run, judged before any of them exists."""

from __future__ import annotations

from debusine.server.worker_pools.matching import PoolCapabilities


def test_a_pool_without_tags_runs_every_task() -> None:
    anything = PoolCapabilities([])
    assert not anything.restricts
    assert anything.missing("sbuild", "incus-vm") is None
    # Tags outside the three families restrict nothing either.
    assert PoolCapabilities(["kvm", "fast"]).missing("sbuild", None) is None


def test_task_tags_name_the_tasks_at_the_server_version() -> None:
    noop_only = PoolCapabilities(["worker:task:worker:noop:version:1"])
    assert noop_only.missing("noop", None) is None
    assert noop_only.missing("sleep", None) == "sleep: no worker:task:worker:sleep:version:1 tag"
    stale = PoolCapabilities(["worker:task:worker:noop:version:0"])
    assert stale.missing("noop", None) == "noop: no worker:task:worker:noop:version:1 tag"
    assert noop_only.missing("frobnicate", None) == "frobnicate: not a task this server knows"


def test_executor_and_capability_tags_for_executor_tasks() -> None:
    builder = PoolCapabilities(["worker:executor:unshare", "worker:cap:sbuild"])
    assert builder.missing("sbuild", None) is None  # the default backend
    assert builder.missing("sbuild", "auto") is None
    assert builder.missing("sbuild", "unshare") is None
    assert builder.missing("sbuild", "incus-lxc") == "sbuild: no worker:executor:incus-lxc tag"
    assert (
        builder.missing("autopkgtest", "unshare") == "autopkgtest: no worker:cap:autopkgtest tag"
    )
    # A task that runs in no executor is not restricted by executor or capability tags.
    assert builder.missing("sleep", None) is None
    # Only the families named restrict: no capability tags, so any tool is assumed.
    vm_pool = PoolCapabilities(["worker:executor:incus-vm"])
    assert vm_pool.missing("autopkgtest", "incus-vm") is None
    assert (
        vm_pool.missing("autopkgtest", "unshare") == "autopkgtest: no worker:executor:unshare tag"
    )
