"""
What an administrator writes about a pool and a provider account, as strict pydantic models.

`debusine-admin worker_pool create` and `asset create_cloud_provider_account` validate their
input with these before storing anything, so a typo is refused with the field and the reason
instead of failing at the first launch. No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from debusine.server.db.worker_pool_schedules import (
    CronError,
    CronExpression,
    parse_zone,
    period_started_at,
)

ProviderType = Literal["local", "aws", "hetzner"]
PROVIDER_TYPES: tuple[str, ...] = ("local", "aws", "hetzner")
InstallSource = Literal["release", "backports", "daily-builds", "pre-installed"]
DebianRelease = Literal["bookworm", "trixie", "forky"]

NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(gt=0)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpecificationError(ValueError):
    """Input that does not validate; the message names each field at fault and why."""


def explain(error: ValidationError, strip: int = 0) -> str:
    """Every problem on one line: `field.path: reason` (`strip`: leading path parts to drop)."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"][strip:]) or "(top level)"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


# --- Limits -------------------------------------------------------------------------------------

#: Longest period of a schedule (a week: longer periods are better written as plain limits).
MAX_PERIOD_SECONDS = 7 * 24 * 3600


class LimitsSchedule(StrictModel):
    """A recurring period that changes the pool's minimum and spare instances while it is on."""

    #: When each period starts: minute hour day-of-month month day-of-week.
    cron: str
    #: How long each period lasts.
    duration_seconds: Annotated[int, Field(gt=0, le=MAX_PERIOD_SECONDS)]
    #: The time zone the cron expression is read in (an IANA name).
    timezone: str = "UTC"
    #: The minimum while the period is on (the pool's own when not given).
    min_active_instances: NonNegative | None = None
    #: The spare idle instances while the period is on (the pool's own when not given).
    idle_count: NonNegative | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            CronExpression.parse(value)
        except CronError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            parse_zone(value)
        except CronError as error:
            raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _changes_something(self) -> LimitsSchedule:
        if self.min_active_instances is None and self.idle_count is None:
            raise ValueError("a schedule sets min_active_instances, idle_count or both")
        return self


@dataclass(frozen=True)
class EffectiveLimits:
    """The minimum and spare instances at one instant, and the schedule that set them."""

    min_active_instances: int
    idle_count: int
    #: "schedules[N] (cron, zone) since ISO time", or None for the pool's own limits.
    schedule: str | None


class PoolLimits(StrictModel):
    """How far the provisioner may go with one pool."""

    #: Never more instances than this (launched, booting or running).
    max_active_instances: NonNegative = 1
    #: Never fewer: kept running even with nothing to do.
    min_active_instances: NonNegative = 0
    #: Spare idle instances on top of those busy or about to be (GitLab's `idle_count`).
    idle_count: NonNegative = 0
    #: Runtime budget of the pool per calendar month (UTC), in instance-seconds.
    target_max_seconds_per_month: NonNegative | None = None
    #: An instance idle this long is terminated (unless the minimum needs it).
    max_idle_seconds: NonNegative = 3600
    #: Wanted time from pending to started: the queue's expected work divided by this is
    #: the number of instances wanted. None: one instance per pending work request.
    target_latency_seconds: Positive | None = None
    #: An instance whose worker has not registered this long after its launch is a failed
    #: launch: it is terminated and the pool backs off.
    register_timeout_seconds: Positive = 600
    #: Drained (then replaced) after this many work requests.
    recycle_after_work_requests: Positive | None = None
    #: Drained (then replaced) after this many seconds of life.
    max_age_seconds: Positive | None = None
    #: Periods that change min_active_instances and idle_count; when several are on, the
    #: last one listed wins.
    schedules: list[LimitsSchedule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _minimum_within_maximum(self) -> PoolLimits:
        if self.min_active_instances > self.max_active_instances:
            raise ValueError(
                f"min_active_instances ({self.min_active_instances}) is above "
                f"max_active_instances ({self.max_active_instances})"
            )
        for index, schedule in enumerate(self.schedules):
            minimum = schedule.min_active_instances
            if minimum is not None and minimum > self.max_active_instances:
                raise ValueError(
                    f"schedules.{index}.min_active_instances ({minimum}) is above "
                    f"max_active_instances ({self.max_active_instances})"
                )
        return self

    def effective_at(self, now: datetime) -> EffectiveLimits:
        """The minimum and spare instances at `now`, with the schedules applied."""
        effective = EffectiveLimits(self.min_active_instances, self.idle_count, None)
        for index, schedule in enumerate(self.schedules):
            started = period_started_at(
                schedule.cron, schedule.timezone, schedule.duration_seconds, now
            )
            if started is None:
                continue
            effective = EffectiveLimits(
                min_active_instances=(
                    schedule.min_active_instances
                    if schedule.min_active_instances is not None
                    else self.min_active_instances
                ),
                idle_count=(
                    schedule.idle_count if schedule.idle_count is not None else self.idle_count
                ),
                schedule=(
                    f"schedules[{index}] ({schedule.cron!r} {schedule.timezone}) since "
                    f"{started.isoformat()}"
                ),
            )
        return effective


# --- Specifications, one model per provider --------------------------------------------------


class LocalSpecification(StrictModel):
    """Workers started as processes of this machine (tests, or a machine's spare capacity)."""

    provider_type: Literal["local"] = "local"
    #: The api-url the workers use (e.g. http://127.0.0.1:8000/api).
    api_url: str = Field(pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    #: Where each worker gets its home (`<directory>/<worker name>/`); default: under the
    #: server's data directory.
    home_directory: str | None = None
    #: The worker's log level.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Seconds a terminated worker gets to stop after SIGTERM before SIGKILL.
    stop_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0


class AwsLaunchTemplate(StrictModel):
    """One way to launch; they are tried in order (capacity fallback)."""

    image_id: str = Field(pattern=r"^ami-[0-9a-f]+$")
    instance_type: str = Field(min_length=1)
    subnet_id: str | None = None
    security_group_ids: list[str] = Field(default_factory=list)
    key_name: str | None = None
    root_device_size_gib: Positive | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class AwsSpecification(StrictModel):
    provider_type: Literal["aws"] = "aws"
    launch_templates: list[AwsLaunchTemplate] = Field(min_length=1)
    instance_market_type: Literal["spot", "on-demand"] = "spot"
    #: Fall back to on-demand when spot capacity is short.
    on_demand_fallback: bool = True
    #: Replace an instance whose spot capacity was reclaimed with an on-demand one, so its
    #: retried work request is not interrupted twice.
    on_demand_after_interruption: bool = True
    #: What a spot instance's worker watches for the interruption notice (instance metadata;
    #: written to its config.ini as interruption-notice-url); None: not watched.
    interruption_notice_url: str | None = Field(
        default="http://169.254.169.254/latest/meta-data/spot/instance-action",
        pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
    )
    max_spot_price_per_hour: Annotated[float, Field(gt=0)] | None = None
    api_url: str = Field(pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    debian_release: DebianRelease = "trixie"
    debusine_install_source: InstallSource = "release"
    debusine_repository_url: str | None = None


class HetznerSpecification(StrictModel):
    provider_type: Literal["hetzner"] = "hetzner"
    #: Server types tried in order (capacity fallback).
    server_types: list[str] = Field(min_length=1)
    image_name: str
    #: Locations tried in order.
    locations: list[str] = Field(default_factory=list)
    ssh_keys: list[str] = Field(default_factory=list)
    networks: list[int] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    enable_ipv4: bool = True
    enable_ipv6: bool = True
    api_url: str = Field(pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    debian_release: DebianRelease = "trixie"
    debusine_install_source: InstallSource = "release"
    debusine_repository_url: str | None = None


Specification = Annotated[
    LocalSpecification | AwsSpecification | HetznerSpecification,
    Field(discriminator="provider_type"),
]


class _SpecificationHolder(StrictModel):
    specifications: Specification


def parse_specifications(
    data: Any,
) -> LocalSpecification | AwsSpecification | HetznerSpecification:
    """Validate a pool's specifications; raise SpecificationError naming the fields."""
    try:
        return _SpecificationHolder.model_validate({"specifications": data}).specifications
    except ValidationError as error:
        # Paths start with ("specifications", provider type): the caller names the field.
        tagged = all(len(item["loc"]) > 1 for item in error.errors())
        raise SpecificationError(explain(error, strip=2 if tagged else 1)) from None


def parse_limits(data: Any) -> PoolLimits:
    try:
        return PoolLimits.model_validate(data if data is not None else {})
    except ValidationError as error:
        raise SpecificationError("limits: " + explain(error)) from None


# --- Provider accounts ------------------------------------------------------------------------


class LocalAccountCredentials(StrictModel):
    pass


class AwsCredentials(StrictModel):
    access_key_id: str = Field(min_length=1)
    secret_access_key: str = Field(min_length=1)


class HetznerCredentials(StrictModel):
    api_token: str = Field(min_length=1)


class AccountConfiguration(StrictModel):
    region_name: str | None = None
    ec2_endpoint_url: str | None = None
    hetzner_endpoint_url: str | None = None


class CloudProviderAccount(StrictModel):
    """The data of a `debusine:cloud-provider-account` asset."""

    provider_type: ProviderType
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    configuration: AccountConfiguration = Field(default_factory=AccountConfiguration)
    credentials: dict[str, str] = Field(default_factory=dict)

    def redacted(self) -> dict[str, Any]:
        """What may be printed: credentials replaced by their names."""
        data = self.model_dump(mode="json")
        data["credentials"] = {key: "(hidden)" for key in self.credentials}
        return data


CREDENTIALS_MODELS: dict[str, type[StrictModel]] = {
    "local": LocalAccountCredentials,
    "aws": AwsCredentials,
    "hetzner": HetznerCredentials,
}


def parse_account(data: Any) -> CloudProviderAccount:
    """Validate a provider account, its credentials by the provider's own model."""
    try:
        account = CloudProviderAccount.model_validate(data)
    except ValidationError as error:
        raise SpecificationError(explain(error)) from None
    try:
        CREDENTIALS_MODELS[account.provider_type].model_validate(account.credentials)
    except ValidationError as error:
        raise SpecificationError("credentials." + explain(error)) from None
    return account
