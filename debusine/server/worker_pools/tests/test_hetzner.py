"""The `hetzner` provider through `hcloud`, against a loopback endpoint answering its calls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from debusine.server.db.models import Asset, AssetCategory, Token, User, WorkerPool
from debusine.server.worker_pools.provisioner import run_provisioner_pass
from debusine.testing.hetzner import API_TOKEN, FakeHetznerApi
from debusine.testing.playground import Playground


@pytest.fixture
def api() -> Iterator[FakeHetznerApi]:
    with FakeHetznerApi() as running:
        yield running


def make_pool(api: FakeHetznerApi, token: str = API_TOKEN) -> WorkerPool:
    account = Asset.objects.create(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
        data={
            "provider_type": "hetzner",
            "name": "hz",
            "configuration": {"hetzner_endpoint_url": api.endpoint_url},
            "credentials": {"api_token": token},
        },
    )
    pool = WorkerPool(
        name="hz",
        provider_account=account,
        architectures=["amd64"],
        specifications={
            "provider_type": "hetzner",
            "api_url": "https://debusine.example.org/api",
            "server_types": ["cax21", "cpx31"],
            "image_name": "debian-13",
            "locations": ["fsn1", "nbg1"],
            "ssh_keys": ["admin"],
            "labels": {"team": "ci"},
            "enable_ipv4": False,
        },
        limits={"max_active_instances": 2, "max_idle_seconds": 0},
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


def test_launch_with_capacity_fallback_labels_and_user_data(
    playground: Playground, api: FakeHetznerApi
) -> None:
    pool = make_pool(api)
    api.state.unavailable_server_types.add("cax21")
    pending(playground, 2)

    report = run_provisioner_pass()

    assert "launched 2 of 2" in report.lines()[0]
    assert len(api.state.servers) == 2
    for server_id, body in api.state.requests.items():
        worker = pool.workers.get(name=body["name"])
        assert worker.worker_pool_data["instance_id"] == str(server_id)
        assert body["server_type"] == "cpx31"  # cax21 had no capacity
        assert body["location"] == "fsn1"
        assert body["image"] == "debian-13"
        assert body["ssh_keys"] == ["admin"]
        assert body["public_net"] == {"enable_ipv4": False, "enable_ipv6": True}
        assert body["labels"] == {
            "team": "ci",
            "debusine-worker-pool": "hz",
            "debusine-worker": worker.name,
        }
        key = body["user_data"].split("activation-token\n")[1].split("content: |\n")[1]
        assert Token.objects.get_by_key(key.split("\n")[0].strip()) == worker.activation_token


def test_terminate_sweep_and_no_capacity(playground: Playground, api: FakeHetznerApi) -> None:
    pool = make_pool(api)
    api.state.servers[1] = {
        "id": 1,
        "name": "stray",
        "status": "running",
        "labels": {"debusine-worker-pool": "hz"},
    }
    api.state.unavailable_server_types.update({"cax21", "cpx31"})
    pending(playground, 1)

    lines = run_provisioner_pass().lines()

    assert any("swept leaked instance 1" in line for line in lines)
    assert any("launch failed, backing off: Hetzner has no capacity" in line for line in lines)
    assert api.state.servers == {}
    pool.refresh_from_db()
    assert pool.launch_backoff_until is not None


def test_invalid_token_gives_a_clear_error_and_changes_nothing(
    playground: Playground, api: FakeHetznerApi
) -> None:
    pool = make_pool(api, token="wrong")
    pending(playground, 1)

    [line] = run_provisioner_pass().lines()

    assert "Hetzner refused the API token of account hz (unauthorized)" in line
    assert not pool.workers.exists()
    assert api.state.servers == {}
