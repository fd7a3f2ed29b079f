"""`debusine-admin worker_pool`: dynamic worker pools, their instances and statistics."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandParser
from django.db.models import Count, Sum
from django.utils import timezone

from debusine.server.db.models import (
    Asset,
    AssetCategory,
    ScopeWorkerPoolLimits,
    WorkerPool,
    WorkerPoolStatistics,
)
from debusine.server.db.models.metrics import current_metric_counts
from debusine.server.db.models.worker_pools import month_start, scope_budgets
from debusine.server.management.base import (
    NounCommand,
    add_yaml_option,
    fail,
    get_scope,
    get_worker,
    read_json_mapping,
    save_validated,
)
from debusine.server.worker_pools import provisioner
from debusine.server.worker_pools.instances import active_workers, has_registered, provider_for
from debusine.server.worker_pools.providers.base import ProviderError


def get_pool(name: str) -> WorkerPool:
    pool = WorkerPool.objects.select_related("provider_account", "scope").filter(name=name).first()
    if pool is None:
        fail(f"no worker pool is named {name!r}")
    return pool


def get_account(name: str) -> Asset:
    account = Asset.objects.filter(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT, data__name=name
    ).first()
    if account is None:
        fail(
            f"no cloud provider account is named {name!r}: create it with "
            "`debusine-admin asset create_cloud_provider_account`"
        )
    return account


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def scope_budget_text(scope_id: int) -> str:
    budget = scope_budgets().get(scope_id)
    if budget is None:
        return "no monthly budget"
    state = "used up: its pending work makes no pool grow" if budget.exhausted else "available"
    return f"{budget.used_seconds:.0f} of {budget.budget_seconds} s used this month ({state})"


def pool_budget_text(pool: WorkerPool, used: float) -> str:
    budget = pool.parsed_limits().target_max_seconds_per_month
    if budget is None:
        return "no monthly budget"
    state = "used up: launches nothing" if used >= budget else "available"
    return f"{used:.0f} of {budget} s used this month ({state})"


def histogram_summary(pool: WorkerPool, family: str) -> dict[str, Any]:
    """
    Count, mean and the 50th and 90th percentiles of one of the pool's histograms
    (percentiles as the upper bound of the bucket they fall in: `<= 60`).
    """
    buckets: dict[float, int] = {}
    total = 0.0
    for name, key, count, observed in current_metric_counts():
        if name == family and key.get("worker_pool") == pool.name:
            bound = float("inf") if key["le"] == "+Inf" else float(key["le"])
            buckets[bound] = buckets.get(bound, 0) + count
            total += observed
    count = sum(buckets.values())
    if not count:
        return {"count": 0}
    summary: dict[str, Any] = {"count": count, "mean": round(total / count, 1)}
    for label, fraction in (("p50", 0.5), ("p90", 0.9)):
        cumulative = 0
        for bound in sorted(buckets):
            cumulative += buckets[bound]
            if cumulative >= fraction * count:
                summary[label] = f"<= {bound:g}" if bound != float("inf") else "> 86400"
                break
    return summary


def pool_summary(pool: WorkerPool) -> dict[str, Any]:
    """What `list --yaml` and `show` say of a pool (never the account's credentials)."""
    now = timezone.now()
    workers = active_workers(pool)
    runtime = pool.runtime_this_month(now)
    return {
        "name": pool.name,
        "provider_account": pool.provider_account.data.get("name"),
        "provider_type": pool.provider_account.data.get("provider_type"),
        "enabled": pool.enabled,
        "architectures": pool.architectures,
        "tags": pool.tags,
        "scope": pool.scope.name if pool.scope else None,
        "priority": pool.priority,
        "ephemeral": pool.ephemeral,
        "limits": pool.parsed_limits().model_dump(),
        "specifications": pool.specifications,
        "active_instances": len(workers),
        "registered_at": pool.registered_at,
        "runtime_this_month_seconds": round(runtime, 1),
        "pool_budget": pool_budget_text(pool, runtime),
        "scope_budget": scope_budget_text(pool.scope_id) if pool.scope_id else None,
        "launch_backoff_until": pool.launch_backoff_until,
        "consecutive_launch_failures": pool.consecutive_launch_failures,
        "counters": pool.counters,
    }


class Command(NounCommand):
    help = (
        "Manage dynamic worker pools: create, delete, enable, disable, list, show, launch, "
        "terminate, drain."
    )
    verbs_without_command_transaction = frozenset({"launch", "terminate"})

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(
            verbs,
            "create",
            "Create a pool. Its specifications and limits are validated: a bad one is refused "
            "with the field and the reason.",
        )
        create.add_argument("name")
        create.add_argument(
            "--provider-account", required=True, metavar="NAME", help="cloud provider account"
        )
        create.add_argument(
            "--architectures", required=True, help="comma-separated, e.g. amd64,i386"
        )
        create.add_argument("--tags", default="", help="comma-separated worker tags")
        create.add_argument(
            "--specifications",
            required=True,
            metavar="FILE",
            help="YAML file of the provider's specifications ('-': stdin)",
        )
        create.add_argument("--limits", metavar="FILE", help="YAML file of the limits")
        create.add_argument(
            "--scope", help="serve only this scope's work (default: instance-wide)"
        )
        create.add_argument("--priority", type=int, default=0, help="higher goes first")
        create.add_argument(
            "--ephemeral", action="store_true", help="one work request per instance"
        )
        create.add_argument("--disabled", action="store_true", help="create it disabled")

        delete = self.add_verb(
            verbs, "delete", "Delete a pool that has no running instance (disable it first)."
        )
        delete.add_argument("name")
        for verb, text in (
            ("enable", "Enable a pool: the provisioner launches for it again."),
            (
                "disable",
                "Disable a pool: no launches; its idle instances are terminated by the next "
                "pass, busy ones once idle.",
            ),
        ):
            parser = self.add_verb(verbs, verb, text)
            parser.add_argument("name")
        listing = self.add_verb(verbs, "list", "List pools.")
        add_yaml_option(listing)
        show = self.add_verb(
            verbs, "show", "Show a pool: limits, instances, runtime per month, terminations."
        )
        show.add_argument("name")
        add_yaml_option(show)
        launch = self.add_verb(verbs, "launch", "Launch N instances of the pool now.")
        launch.add_argument("name")
        launch.add_argument("count", type=int, metavar="N")
        terminate = self.add_verb(
            verbs,
            "terminate",
            "Terminate a pool worker's instance now (its running work is retried elsewhere).",
        )
        terminate.add_argument("worker", metavar="WORKER")
        drain = self.add_verb(
            verbs,
            "drain",
            "Drain a pool worker: no new work; terminated once its running work is done.",
        )
        drain.add_argument("worker", metavar="WORKER")
        budget = self.add_verb(
            verbs,
            "scope_budget",
            "Show or set a scope's monthly budget across every pool, in instance-seconds: the "
            "runtime of its own pools' instances plus the time its work requests run on "
            "instance-wide pools. Once used up, its pending work makes no pool grow.",
        )
        budget.add_argument("scope")
        budget.add_argument(
            "seconds",
            nargs="?",
            metavar="SECONDS|none",
            help="the new budget per calendar month (UTC); 'none' removes it",
        )

    def verb_create(
        self,
        *,
        name: str,
        provider_account: str,
        architectures: str,
        tags: str,
        specifications: str,
        limits: str | None,
        scope: str | None,
        priority: int,
        ephemeral: bool,
        disabled: bool,
        **_: Any,
    ) -> None:
        if WorkerPool.objects.filter(name=name).exists():
            fail(f"a worker pool named {name!r} already exists")
        pool = WorkerPool(
            name=name,
            provider_account=get_account(provider_account),
            enabled=not disabled,
            architectures=split_list(architectures),
            tags=split_list(tags),
            specifications=read_json_mapping(specifications, self.stdin, "--specifications"),
            limits=read_json_mapping(limits, self.stdin, "--limits") if limits else {},
            scope=get_scope(scope) if scope else None,
            priority=priority,
            ephemeral=ephemeral,
        )
        save_validated(pool)
        self.write(f"Created worker pool {name}")

    def verb_delete(self, *, name: str, **_: Any) -> None:
        pool = get_pool(name)
        running = active_workers(pool)
        if running:
            fail(
                f"worker pool {name} has {len(running)} instance(s): disable it and wait for "
                "them to end (or terminate them) first"
            )
        pool.workers.all().delete()
        pool.delete()
        self.write(f"Deleted worker pool {name}")

    def verb_enable(self, *, name: str, **_: Any) -> None:
        pool = get_pool(name)
        pool.enabled = True
        pool.save(update_fields=["enabled"])
        self.write(f"Enabled worker pool {name}")

    def verb_disable(self, *, name: str, **_: Any) -> None:
        pool = get_pool(name)
        pool.enabled = False
        pool.save(update_fields=["enabled"])
        self.write(f"Disabled worker pool {name}")

    def verb_list(self, *, yaml: bool, **_: Any) -> None:
        pools = list(WorkerPool.objects.select_related("provider_account", "scope"))
        if yaml:
            self.write_yaml([pool_summary(pool) for pool in pools])
            return
        self.write_table(
            ["NAME", "PROVIDER", "ENABLED", "ARCHITECTURES", "SCOPE", "ACTIVE", "MAX"],
            [
                [
                    pool.name,
                    pool.provider_account.data.get("provider_type"),
                    pool.enabled,
                    ",".join(pool.architectures),
                    pool.scope.name if pool.scope else "(all)",
                    pool.workers.filter(instance_created_at__isnull=False).count(),
                    pool.parsed_limits().max_active_instances,
                ]
                for pool in pools
            ],
        )

    def verb_show(self, *, name: str, yaml: bool, **_: Any) -> None:
        pool = get_pool(name)
        summary = pool_summary(pool)
        summary["instances"] = [
            {
                "worker": worker.name,
                "instance_id": worker.worker_pool_data.get("instance_id"),
                "launched_at": worker.instance_created_at,
                "registered": has_registered(worker),
                "connected": worker.connected_at is not None,
                "draining": worker.draining_at is not None,
            }
            for worker in active_workers(pool)
        ]
        months = (
            WorkerPoolStatistics.objects.filter(worker_pool=pool)
            .values_list("ended_at", "runtime_seconds")
            .order_by("ended_at")
        )
        per_month: dict[str, float] = {}
        for ended_at, seconds in months:
            key = month_start(ended_at).strftime("%Y-%m")
            per_month[key] = per_month.get(key, 0.0) + seconds
        current = month_start(timezone.now()).strftime("%Y-%m")
        per_month[current] = summary["runtime_this_month_seconds"]
        summary["runtime_per_month_seconds"] = {
            key: round(value, 1) for key, value in sorted(per_month.items())
        }
        summary["terminations"] = {
            row["reason"]: row["count"]
            for row in WorkerPoolStatistics.objects.filter(worker_pool=pool)
            .values("reason")
            .annotate(count=Count("id"))
            .order_by("reason")
        }
        boot = WorkerPoolStatistics.objects.filter(
            worker_pool=pool, boot_seconds__isnull=False
        ).aggregate(total=Sum("boot_seconds"), count=Count("id"))
        summary["mean_boot_seconds"] = (
            round(boot["total"] / boot["count"], 1) if boot["count"] else None
        )
        summary["boot_to_ready_seconds"] = histogram_summary(pool, "worker_pool_boot_seconds")
        summary["queue_to_start_seconds"] = histogram_summary(pool, "worker_pool_queue_seconds")
        if yaml:
            self.write_yaml(summary)
            return
        for key, value in summary.items():
            if key in ("instances", "specifications"):
                continue
            self.write(f"{key}: {value}")
        self.write_table(
            ["WORKER", "INSTANCE", "LAUNCHED", "REGISTERED", "CONNECTED", "DRAINING"],
            [list(item.values()) for item in summary["instances"]],
        )

    def verb_launch(self, *, name: str, count: int, **_: Any) -> None:
        if count < 1:
            fail("N must be at least 1")
        pool = get_pool(name)
        if not pool.enabled:
            fail(f"worker pool {name} is disabled")
        try:
            # Listing first checks the account and the provider's answer: a refusal (bad
            # credentials, unreachable endpoint) stops here, having changed nothing.
            provider_for(pool).list_running(pool.name)
        except ProviderError as error:
            fail(str(error))
        outcome = provisioner.launch_by_admin(pool, count)
        for worker in outcome.launched:
            self.write(f"Launched {worker.name} ({worker.worker_pool_data.get('instance_id')})")
        if outcome.error is not None:
            fail(f"launch failed: {outcome.error}")

    def verb_terminate(self, *, worker: str, **_: Any) -> None:
        target = get_worker(worker)
        if target.worker_pool is None:
            fail(f"worker {target.name} belongs to no worker pool")
        if target.instance_created_at is None:
            fail(f"worker {target.name} has no running instance")
        try:
            provisioner.terminate_by_admin(target)
        except ProviderError as error:
            fail(f"cannot terminate {target.name}: {error}")
        self.write(f"Terminated {target.name}")

    def verb_drain(self, *, worker: str, **_: Any) -> None:
        target = get_worker(worker)
        if target.worker_pool is None:
            fail(f"worker {target.name} belongs to no worker pool")
        if target.instance_created_at is None:
            fail(f"worker {target.name} has no running instance")
        target.draining_at = timezone.now()
        target.save(update_fields=["draining_at"])
        self.write(f"Draining {target.name}: terminated once idle")

    def verb_scope_budget(self, *, scope: str, seconds: str | None, **_: Any) -> None:
        target = get_scope(scope)
        if seconds is not None:
            if seconds == "none":
                ScopeWorkerPoolLimits.objects.filter(scope=target).delete()
            elif seconds.isdigit():
                ScopeWorkerPoolLimits.objects.update_or_create(
                    scope=target, defaults={"target_max_seconds_per_month": int(seconds)}
                )
            else:
                fail(f"SECONDS must be a whole number of seconds or 'none', not {seconds!r}")
        self.write(f"{target.name}: {scope_budget_text(target.pk)}")
