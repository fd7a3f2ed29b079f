"""
API fuzzing: schemathesis against a real server, driven by the OpenAPI description it serves
at `/api/schema/`.

Every operation gets a bounded number of generated requests (EXAMPLES_PER_OPERATION, valid and
invalid bodies, parameters and headers), sent to a throwaway server (gunicorn + uvicorn, its own
database) with a contributor's token, then with an enabled worker's token (the worker
endpoints parse their bodies only for a worker). For each response: no 5xx; every 4xx is a problem
document; and a 4xx changed nothing: a snapshot of the database (row count and checksum of every
table of ours) taken before the request equals the one taken after it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from debusine.testing.throwaway import ThrowawayError, ThrowawayInstance, throwaway_instance

#: Examples per operation, mode and token: 19 operations, about 600 requests in all (~100 s of
#: requests on a loaded 2-core machine, plus the server's start).
EXAMPLES_PER_OPERATION = 8
PROBLEM = "application/problem+json"
#: Columns every request may touch legitimately (a token's last use), left out of snapshots.
VOLATILE_COLUMNS = ["last_seen_at"]


@pytest.fixture(scope="module")
def fuzzed_server(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[tuple[ThrowawayInstance, dict[str, str]]]:
    """A throwaway server of this module's own, and a contributor's and a worker's tokens."""
    from django.conf import settings as django_settings

    try:
        with throwaway_instance(
            postgres_url=django_settings.DEBUSINE_DATABASE_URL,
            redis_url=django_settings.DEBUSINE_REDIS_URL,
            data_dir=tmp_path_factory.mktemp("fuzzing"),
            name_prefix=f"test_fuzz_{worker_id}",
        ) as instance:
            user_token = instance.create_contributor("fuzzer")
            activation = instance.create_worker_activation("fuzzed-worker.example.org")
            worker_token = secrets.token_hex(32)
            registered = requests.post(
                f"{instance.api_url}/1.0/worker/register/",
                json={"token": worker_token, "fqdn": "fuzzed-worker.example.org"},
                headers={"Token": activation},
                timeout=30,
            )
            assert registered.status_code == 201, registered.text
            yield instance, {"user": user_token, "worker": worker_token}
    except ThrowawayError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: tuple[ThrowawayInstance, dict[str, str]]) -> Any:
    instance, _tokens = fuzzed_server
    return schemathesis.openapi.from_url(f"{instance.base_url}/api/schema/")


@pytest.fixture(scope="module")
def database(
    fuzzed_server: tuple[ThrowawayInstance, dict[str, str]],
) -> Iterator[psycopg.Connection[Any]]:
    instance, _tokens = fuzzed_server
    with psycopg.connect(instance.database_url, autocommit=True) as connection:
        yield connection


def snapshot(connection: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    """Row count and checksum (of every row but its volatile columns) of each table of ours."""
    tables = [
        row[0]
        for row in connection.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name LIKE 'db\\_%' ORDER BY table_name"
        )
    ]
    state: dict[str, tuple[int, str]] = {}
    for table in tables:
        row = connection.execute(
            psycopg.sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg((to_jsonb(t) - %s::text[])::text, ','"
                " ORDER BY (to_jsonb(t) - %s::text[])::text), '')) FROM {} t"
            ).format(psycopg.sql.Identifier(table)),
            [VOLATILE_COLUMNS, VOLATILE_COLUMNS],
        ).fetchone()
        assert row is not None
        state[table] = (int(row[0]), str(row[1]))
    return state


def check_response(
    case: Any,
    instance: ThrowawayInstance,
    token: str,
    database: psycopg.Connection[Any],
) -> str | None:
    """Send `case`; what is wrong with the answer, or None."""
    before = snapshot(database)
    try:
        response = case.call(base_url=instance.base_url, headers={"Token": token}, timeout=30)
    except requests.RequestException as error:
        return f"{case.method} {case.formatted_path}: no answer: {error}"
    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    if response.status_code >= 500:
        return f"{where}: {response.content[:300]!r}"
    if response.status_code < 400:
        return None
    # schemathesis' responses have lowercase header names and lists of values.
    content_type = response.headers.get("content-type", [""])[0]
    if content_type != PROBLEM:
        return f"{where}: not a problem: {content_type} {response.content[:200]!r}"
    problem = json.loads(response.content)
    if not (isinstance(problem.get("title"), str) and problem["title"]):
        return f"{where}: no title: {problem}"
    if "detail" not in problem or problem.get("status") != response.status_code:
        return f"{where}: no detail or wrong status: {problem}"
    if snapshot(database) != before:
        return f"{where} changed the database: {problem}"
    return None


@pytest.mark.parametrize("caller", ["user", "worker"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_under_generated_input(
    mode: GenerationMode,
    caller: str,
    api_schema: Any,
    fuzzed_server: tuple[ThrowawayInstance, dict[str, str]],
    database: psycopg.Connection[Any],
) -> None:
    instance, tokens = fuzzed_server
    token = tokens[caller]
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    examples = 0
    unsatisfiable: list[str] = []

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def send(case: Any) -> None:
            nonlocal examples
            examples += 1
            failure = check_response(case, instance, token, database)
            if failure is not None:
                failures.append(failure)

        try:
            send()
        except Unsatisfiable:
            # Nothing to break in this mode (negative cases of an operation without
            # parameters nor body): nothing was sent.
            unsatisfiable.append(operation.label)

    print(
        f"\nfuzzing ({mode.value}, {caller} token): {len(operations)} operations, "
        f"{examples} examples, {len(failures)} failures; no case of this mode for {unsatisfiable}"
    )
    assert len(operations) >= 16
    assert examples >= len(operations)
    assert failures == [], "\n".join(failures[:30])


def test_the_snapshot_sees_a_changed_row(database: psycopg.Connection[Any]) -> None:
    before = snapshot(database)
    assert before["db_user"][0] >= 1
    with database.transaction():
        database.execute("UPDATE db_user SET first_name = first_name || 'x'")
        changed = snapshot(database)
        database.execute("UPDATE db_user SET first_name = left(first_name, -1)")
    assert changed["db_user"] != before["db_user"]
    assert snapshot(database) == before
