"""Pool specifications and limits: what is accepted, and how a refusal reads."""

from __future__ import annotations

import pytest

from debusine.server.db.worker_pool_specs import (
    AwsSpecification,
    SpecificationError,
    parse_account,
    parse_limits,
    parse_specifications,
)

AWS = {
    "provider_type": "aws",
    "api_url": "https://debusine.example.org/api",
    "launch_templates": [{"image_id": "ami-0abc", "instance_type": "m7g.large"}],
}


def test_aws_specification_defaults() -> None:
    spec = parse_specifications(AWS)
    assert isinstance(spec, AwsSpecification)
    assert spec.instance_market_type == "spot"
    assert spec.debusine_install_source == "release"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"provider_type": "gcp"}, "(top level): Input tag 'gcp' found using 'provider_type'"),
        (
            {**AWS, "launch_templates": [{"image_id": "ami-1"}]},
            "launch_templates.0.instance_type: Field required",
        ),
        (
            {**AWS, "launch_templates": [{"image_id": "img", "instance_type": "t3"}]},
            "launch_templates.0.image_id: String should match pattern",
        ),
        ({**AWS, "instance_market_type": "cheap"}, "instance_market_type: Input should be"),
        ({**AWS, "api_url": "ftp://x"}, "api_url: String should match pattern"),
    ],
)
def test_bad_specifications_name_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(SpecificationError) as error:
        parse_specifications(data)
    assert str(error.value).startswith(message), str(error.value)


def test_limits() -> None:
    assert parse_limits(None).max_idle_seconds == 3600
    with pytest.raises(SpecificationError, match="limits: max_active_instances: Input should be"):
        parse_limits({"max_active_instances": -1})
    with pytest.raises(SpecificationError, match="limits: idle: Extra inputs"):
        parse_limits({"idle": 1})


def test_account_redaction() -> None:
    account = parse_account(
        {"provider_type": "hetzner", "name": "h", "credentials": {"api_token": "s3cret"}}
    )
    assert "s3cret" not in str(account.redacted())
    with pytest.raises(SpecificationError, match="name: String should match"):
        parse_account({"provider_type": "local", "name": "a b"})
