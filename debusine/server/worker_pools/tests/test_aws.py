"""The `aws` provider against moto's EC2 server: launches, tags, user data, termination."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from debusine.server.db.models import (
    Asset,
    AssetCategory,
    Token,
    User,
    WorkerPool,
    WorkerPoolStatistics,
    WorkRequest,
    WorkRequestStatus,
)
from debusine.server.management.tests.helpers import run, run_fails
from debusine.server.worker_pools.providers.aws import decode_user_data
from debusine.server.worker_pools.provisioner import run_provisioner_pass
from debusine.server.worker_pools.tests.test_provisioner import register, start
from debusine.testing.moto import REGION, MotoS3Server
from debusine.testing.playground import Playground

API_URL = "https://debusine.example.org/api"


@pytest.fixture(scope="module")
def moto_ec2() -> Iterator[tuple[MotoS3Server, dict[str, str]]]:
    """A moto server enforcing credentials, and a valid key pair for it."""
    # The first three calls (making the IAM user, its key and policy) need no credentials.
    with MotoS3Server({"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as server:
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint_url,
            region_name=REGION,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="provisioner")
        key = iam.create_access_key(UserName="provisioner")["AccessKey"]
        iam.put_user_policy(
            UserName="provisioner",
            PolicyName="everything",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        yield (
            server,
            {
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
            },
        )


def ec2_client(server: MotoS3Server, credentials: dict[str, str]) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=credentials["secret_access_key"],
    )


def make_pool(
    server: MotoS3Server,
    credentials: dict[str, str],
    name: str = "ec2",
    account_credentials: dict[str, str] | None = None,
) -> WorkerPool:
    image = ec2_client(server, credentials).describe_images()["Images"][0]["ImageId"]
    account = Asset.objects.create(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
        data={
            "provider_type": "aws",
            "name": f"{name}-account",
            "configuration": {"region_name": REGION, "ec2_endpoint_url": server.endpoint_url},
            "credentials": account_credentials or credentials,
        },
    )
    pool = WorkerPool(
        name=name,
        provider_account=account,
        architectures=["amd64"],
        specifications={
            "provider_type": "aws",
            "api_url": API_URL,
            "launch_templates": [
                {"image_id": image, "instance_type": "c7a.large", "tags": {"team": "ci"}}
            ],
        },
        limits={"max_active_instances": 2},
    )
    pool.full_clean()
    pool.save()
    return pool


def pending(playground: Playground, count: int) -> None:
    user = User.objects.filter(username="u").first() or playground.create_user("u")
    for _ in range(count):
        playground.create_work_request(
            created_by=user, task_name="sleep", task_data={"seconds": 1}
        )


def pool_instances(server: MotoS3Server, credentials: dict[str, str], pool: str) -> list[Any]:
    answer = ec2_client(server, credentials).describe_instances(
        Filters=[
            {"Name": "tag:debusine-worker-pool", "Values": [pool]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    return [i for r in answer["Reservations"] for i in r["Instances"]]


def test_launch_carries_the_specification_and_a_fresh_activation_token(
    playground: Playground, moto_ec2: tuple[MotoS3Server, dict[str, str]]
) -> None:
    server, credentials = moto_ec2
    pool = make_pool(server, credentials)
    pending(playground, 3)

    report = run_provisioner_pass()

    assert "launched 2 of 2" in report.lines()[0]
    instances = pool_instances(server, credentials, "ec2")
    assert len(instances) == 2
    ec2 = ec2_client(server, credentials)
    for instance in instances:
        tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
        assert instance["InstanceType"] == "c7a.large"
        assert instance["InstanceLifecycle"] == "spot"
        assert tags["team"] == "ci"
        worker = pool.workers.get(name=tags["debusine-worker"])
        assert worker.worker_pool_data["instance_id"] == instance["InstanceId"]
        text = decode_user_data(
            ec2.describe_instance_attribute(
                InstanceId=instance["InstanceId"], Attribute="userData"
            )["UserData"]["Value"]
        )
        assert text.startswith("#cloud-config\n")
        assert f"api-url = {API_URL}" in text
        key = text.split("activation-token\n")[1].split("content: |\n")[1].split("\n")[0].strip()
        assert Token.objects.get_by_key(key) == worker.activation_token
        assert "apt-get, install, -y, debusine-worker" in text
        # A spot instance's worker watches the instance metadata for an interruption notice.
        assert (
            "interruption-notice-url = http://169.254.169.254/latest/meta-data/spot/"
            "instance-action" in text
        )


def test_terminate_and_runtime_accounting(
    playground: Playground, moto_ec2: tuple[MotoS3Server, dict[str, str]]
) -> None:
    server, credentials = moto_ec2
    pool = make_pool(server, credentials, "ec2-terminate")
    output = run("worker_pool", "launch", pool.name, "1")
    worker = pool.workers.get()
    assert output.startswith(f"Launched {worker.name} (i-")
    instance_id = worker.worker_pool_data["instance_id"]

    assert run("worker_pool", "terminate", worker.name) == f"Terminated {worker.name}\n"

    state = ec2_client(server, credentials).describe_instances(InstanceIds=[instance_id])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] in (
        "shutting-down",
        "terminated",
    )
    stats = WorkerPoolStatistics.objects.get(worker_pool=pool)
    assert stats.reason == "admin"
    assert stats.instance_id == instance_id
    assert stats.runtime_seconds > 0
    pool.refresh_from_db()
    assert pool.runtime_this_month() == pytest.approx(stats.runtime_seconds)


def test_invalid_credentials_give_a_clear_error_and_change_nothing(
    playground: Playground, moto_ec2: tuple[MotoS3Server, dict[str, str]]
) -> None:
    server, credentials = moto_ec2
    wrong = {**credentials, "secret_access_key": "wrong"}
    pool = make_pool(server, credentials, name="ec2-bad", account_credentials=wrong)
    pending(playground, 1)
    tokens = Token.objects.count()

    [line] = run_provisioner_pass().lines()
    message = run_fails("worker_pool", "launch", pool.name, "1")

    expected = "AWS refused the credentials of account ec2-bad-account (AuthFailure)"
    assert expected in line
    assert message.startswith(expected)
    assert "wrong" not in message
    assert not pool.workers.exists()
    assert Token.objects.count() == tokens
    pool.refresh_from_db()
    assert pool.counters == {}
    assert pool.consecutive_launch_failures == 0


def test_a_reported_interruption_retries_the_work_on_on_demand_capacity(
    playground: Playground, moto_ec2: tuple[MotoS3Server, dict[str, str]]
) -> None:
    server, credentials = moto_ec2
    pool = make_pool(server, credentials, "ec2-spot")
    pending(playground, 1)
    run_provisioner_pass()
    worker = register(pool.workers.get())
    work_request = WorkRequest.objects.get(status=WorkRequestStatus.PENDING)
    start(work_request, worker)
    [spot] = pool_instances(server, credentials, "ec2-spot")
    assert spot["InstanceLifecycle"] == "spot"
    # What the worker reports once the instance metadata announces the interruption.
    worker.dynamic_metadata = {
        **worker.dynamic_metadata,
        "system:interruption_notice": '{"action": "terminate"}',
    }
    worker.save()

    lines = run_provisioner_pass().lines()

    assert any("announced an interruption" in line for line in lines), lines
    assert any(
        "launched 1 of 1" in line and "1 on on-demand capacity for the work retried" in line
        for line in lines
    ), lines
    retry = WorkRequest.objects.get(supersedes=work_request)
    assert retry.status == WorkRequestStatus.PENDING
    [replacement] = pool_instances(server, credentials, "ec2-spot")
    assert replacement["InstanceId"] != spot["InstanceId"]
    assert "InstanceLifecycle" not in replacement  # on demand
    replacement_worker = pool.workers.get(instance_created_at__isnull=False)
    assert replacement_worker.worker_pool_data["market"] == "on-demand"
    assert "system:interruption_notice" not in replacement_worker.dynamic_metadata
