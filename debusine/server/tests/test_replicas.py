"""
The replica router and middleware without a replica: which requests are eligible, who a caller
is for pins, and where the router sends reads and writes. The routing against a real streaming
replica is tested in tests/integration/test_read_replicas.py.
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS
from django.http import HttpResponse
from django.test import RequestFactory

from debusine.server import replicas
from debusine.server.db.models import Artifact, Token


def test_replica_aliases_are_numbered() -> None:
    assert replicas.replica_aliases(["postgresql://a/x", "postgresql://b/x"]) == [
        "replica_0",
        "replica_1",
    ]
    assert replicas.replica_aliases([]) == []


def test_only_reads_outside_worker_endpoints_are_eligible() -> None:
    factory = RequestFactory()
    assert replicas.is_eligible(factory.get("/api/1.0/artifact/1/"))
    assert replicas.is_eligible(factory.head("/"))
    assert not replicas.is_eligible(factory.post("/api/1.0/artifact/"))
    assert not replicas.is_eligible(factory.get("/api/1.0/work-request/get-next-for-worker/"))
    assert not replicas.is_eligible(factory.get("/api/1.0/worker/dynamic-metadata/"))


def test_callers_are_their_token_session_or_address() -> None:
    factory = RequestFactory()
    by_token = replicas.caller_identities(factory.get("/", HTTP_TOKEN="secret"))
    assert len(by_token) == 1 and by_token[0].startswith("token:")
    assert "secret" not in by_token[0]  # hashed: Redis never holds a token
    request = factory.get("/")
    request.COOKIES["sessionid"] = "old"
    response = HttpResponse()
    response.set_cookie("sessionid", "new")  # a login opens a new session
    both = replicas.caller_identities(request, response)
    assert len(both) == 2 and all(identity.startswith("session:") for identity in both)
    assert replicas.caller_identities(factory.get("/", REMOTE_ADDR="192.0.2.1")) == [
        "address:192.0.2.1"
    ]


def test_the_router_sends_reads_of_a_routed_request_to_its_replica() -> None:
    router = replicas.ReplicaRouter()
    # Outside a request: the primary.
    assert router.db_for_read(Artifact) == DEFAULT_DB_ALIAS
    route = replicas.RequestRoute(replica="replica_0")
    token = replicas._route.set(route)
    try:
        assert router.db_for_read(Artifact) == "replica_0"
        # What authenticates a request is always current.
        assert router.db_for_read(Token) == DEFAULT_DB_ALIAS
        # A write goes to the primary, and so does every read after it.
        assert router.db_for_write(Artifact) == DEFAULT_DB_ALIAS
        assert route.wrote
        assert router.db_for_read(Artifact) == DEFAULT_DB_ALIAS
    finally:
        replicas._route.reset(token)


def test_use_primary_ends_replica_reads() -> None:
    router = replicas.ReplicaRouter()
    token = replicas._route.set(replicas.RequestRoute(replica="replica_0"))
    try:
        replicas.use_primary()
        assert router.db_for_read(Artifact) == DEFAULT_DB_ALIAS
    finally:
        replicas._route.reset(token)
    replicas.use_primary()  # outside a request: nothing to do


def test_migrations_run_on_the_primary_only() -> None:
    router = replicas.ReplicaRouter()
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "db")
    assert not router.allow_migrate("replica_0", "db")


def test_an_unreachable_replica_is_unfit(settings: object) -> None:
    setattr(  # noqa: B010 - pytest-django's settings fixture
        settings, "DEBUSINE_DATABASE_REPLICA_URLS", ["postgresql://nobody@127.0.0.1:1/nothing"]
    )
    health = replicas.check_replica("replica_0")
    assert not health.fit
    assert health.reason.startswith("does not answer")


def test_check_warns_about_an_unused_replica(settings: object) -> None:
    from debusine.server.project.checks import check_replicas_fit

    setattr(  # noqa: B010 - pytest-django's settings fixture
        settings, "DEBUSINE_DATABASE_REPLICA_URLS", ["postgresql://nobody:pw@127.0.0.1:1/x"]
    )
    [warning] = check_replicas_fit()
    assert warning.id == "debusine.W002"
    assert warning.msg.startswith(
        "Read replica replica_0 (postgresql://nobody:***@127.0.0.1:1/x) is not used: does not"
        " answer"
    )
    setattr(settings, "DEBUSINE_DATABASE_REPLICA_URLS", [])  # noqa: B010
    assert check_replicas_fit() == []
