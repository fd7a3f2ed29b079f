"""
The `aws` provider: EC2 instances through boto3.

A launch tries the specification's launch templates in order (capacity fallback), as spot
instances unless the pool says on-demand, then, when spot capacity is short everywhere and
`on_demand_fallback` allows it, on demand. Each instance carries the tags
`debusine-worker-pool` and `debusine-worker` (plus the template's), and cloud-init user data
that writes the worker's configuration and its fresh activation token. `list_running` finds
a pool's instances by tag; a spot instance whose request is marked for termination reports an
interruption notice.
"""

from __future__ import annotations

import base64
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from debusine.server.db.worker_pool_specs import (
    AwsLaunchTemplate,
    AwsSpecification,
    CloudProviderAccount,
)
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

#: EC2 error codes that mean "no capacity here now": try the next choice, or later.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "InstanceLimitExceeded",
        "Unsupported",
    }
)
#: EC2 error codes that mean the account's credentials are wrong.
CREDENTIAL_CODES = frozenset(
    {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"}
)
#: Spot request statuses announcing the instance's end.
INTERRUPTION_STATUSES = frozenset(
    {"marked-for-termination", "marked-for-stop", "instance-terminated-by-price"}
)


def describe(error: ClientError) -> tuple[str, str]:
    details = error.response.get("Error", {})
    return str(details.get("Code", "")), str(details.get("Message", "")).split("\n")[0]


class AwsProvider:
    """EC2 through boto3, with the account's credentials and region."""

    def __init__(self, account: CloudProviderAccount, specification: AwsSpecification) -> None:
        self.account = account
        self.specification = specification
        configuration = account.configuration
        self.client: Any = boto3.client(
            "ec2",
            region_name=configuration.region_name or "us-east-1",
            endpoint_url=configuration.ec2_endpoint_url,
            aws_access_key_id=account.credentials.get("access_key_id"),
            aws_secret_access_key=account.credentials.get("secret_access_key"),
        )

    def _error(self, error: ClientError | BotoCoreError, doing: str) -> ProviderError:
        if isinstance(error, BotoCoreError):
            return ProviderError(f"AWS account {self.account.name}: cannot {doing}: {error}")
        code, message = describe(error)
        if code in CREDENTIAL_CODES:
            return ProviderError(
                f"AWS refused the credentials of account {self.account.name} ({code}): {message}"
            )
        if code in CAPACITY_CODES:
            return CapacityError(f"AWS has no capacity to {doing} ({code}): {message}")
        return ProviderError(
            f"AWS account {self.account.name}: cannot {doing} ({code}): {message}"
        )

    def _run(self, request: LaunchRequest, template: AwsLaunchTemplate, spot: bool) -> str:
        spec = self.specification
        tags = {
            **template.tags,
            **request.tags,
            POOL_TAG: request.pool_name,
            WORKER_TAG: request.worker_name,
            "Name": request.worker_name,
        }
        arguments: dict[str, Any] = {
            "ImageId": template.image_id,
            "InstanceType": template.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "UserData": user_data(
                api_url=spec.api_url,
                activation_token=request.activation_token,
                install_source=spec.debusine_install_source,
                debian_release=spec.debian_release,
                repository_url=spec.debusine_repository_url,
                interruption_notice_url=spec.interruption_notice_url if spot else None,
            ),
            "TagSpecifications": [
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
                }
            ],
        }
        if template.subnet_id:
            arguments["SubnetId"] = template.subnet_id
        if template.security_group_ids:
            arguments["SecurityGroupIds"] = template.security_group_ids
        if template.key_name:
            arguments["KeyName"] = template.key_name
        if template.root_device_size_gib:
            arguments["BlockDeviceMappings"] = [
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {
                        "VolumeSize": template.root_device_size_gib,
                        "DeleteOnTermination": True,
                    },
                }
            ]
        if spot:
            options: dict[str, Any] = {"SpotInstanceType": "one-time"}
            if spec.max_spot_price_per_hour is not None:
                options["MaxPrice"] = f"{spec.max_spot_price_per_hour:.4f}"
            arguments["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        response = self.client.run_instances(**arguments)
        return str(response["Instances"][0]["InstanceId"])

    def launch(self, request: LaunchRequest) -> LaunchedInstance:
        spec = self.specification
        markets = [spec.instance_market_type == "spot" and not request.on_demand]
        if markets[0] and spec.on_demand_fallback:
            markets.append(False)
        shortages: list[str] = []
        for spot in markets:
            for template in spec.launch_templates:
                try:
                    instance_id = self._run(request, template, spot)
                except (ClientError, BotoCoreError) as error:
                    problem = self._error(error, f"launch {template.instance_type}")
                    if isinstance(problem, CapacityError):
                        shortages.append(str(problem))
                        continue
                    raise problem from None
                return LaunchedInstance(
                    instance_id,
                    {
                        "market": "spot" if spot else "on-demand",
                        "instance_type": template.instance_type,
                        "image_id": template.image_id,
                    },
                )
        raise CapacityError("; ".join(shortages) or "no launch template could be used")

    def terminate(self, instance_id: str) -> None:
        try:
            self.client.terminate_instances(InstanceIds=[instance_id])
        except ClientError as error:
            code, _message = describe(error)
            if code.startswith("InvalidInstanceID"):
                return  # already gone
            raise self._error(error, f"terminate {instance_id}") from None
        except BotoCoreError as error:
            raise self._error(error, f"terminate {instance_id}") from None

    def list_running(self, pool_name: str) -> list[RunningInstance]:
        try:
            pages = self.client.get_paginator("describe_instances").paginate(
                Filters=[
                    {"Name": f"tag:{POOL_TAG}", "Values": [pool_name]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]},
                ]
            )
            found = [
                instance
                for page in pages
                for reservation in page.get("Reservations", [])
                for instance in reservation.get("Instances", [])
            ]
            interrupted = self._interrupted_spot_requests(found)
        except (ClientError, BotoCoreError) as error:
            raise self._error(error, "list the pool's instances") from None
        running = []
        for instance in found:
            tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
            running.append(
                RunningInstance(
                    instance_id=instance["InstanceId"],
                    worker_name=tags.get(WORKER_TAG),
                    interruption_notice=instance.get("SpotInstanceRequestId") in interrupted,
                )
            )
        return running

    def _interrupted_spot_requests(self, instances: list[dict[str, Any]]) -> set[str]:
        requests = [
            str(item["SpotInstanceRequestId"])
            for item in instances
            if item.get("SpotInstanceRequestId")
        ]
        if not requests:
            return set()
        answer = self.client.describe_spot_instance_requests(SpotInstanceRequestIds=requests)
        return {
            str(item["SpotInstanceRequestId"])
            for item in answer.get("SpotInstanceRequests", [])
            if item.get("Status", {}).get("Code") in INTERRUPTION_STATUSES
        }


def decode_user_data(encoded: str) -> str:
    """User data as EC2 returns it (base64), for tests and `worker_pool show`."""
    return base64.b64decode(encoded).decode()
