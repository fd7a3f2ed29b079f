"""
API fuzzing: schemathesis against a real server, driven by the OpenAPI description it serves
at `/api/schema/`.

Every operation gets a bounded number of generated requests (EXAMPLES_PER_OPERATION, valid and
invalid bodies, parameters and headers), sent with a contributor's token to a throwaway server
(gunicorn + uvicorn, its own database). For each response: no 5xx; every 4xx is a problem
document; and a 4xx changed nothing: a snapshot of the database (row count and checksum of every
table of ours) taken before the request equals the one taken after it.
"""

from __future__ import annotations

import json
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

#: Examples per operation and mode: 16 operations, about 450 requests in all (~1.5 minutes).
EXAMPLES_PER_OPERATION = 15
PROBLEM = "application/problem+json"
#: Columns every request may touch legitimately (a token's last use), left out of snapshots.
VOLATILE_COLUMNS = ["last_seen_at"]


@pytest.fixture(scope="module")
def fuzzed_server(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[tuple[ThrowawayInstance, str]]:
    """A throwaway server of this module's own, and a contributor's token."""
    from django.conf import settings as django_settings

    try:
        with throwaway_instance(
            postgres_url=django_settings.DEBUSINE_DATABASE_URL,
            redis_url=django_settings.DEBUSINE_REDIS_URL,
            data_dir=tmp_path_factory.mktemp("fuzzing"),
            name_prefix=f"test_fuzz_{worker_id}",
        ) as instance:
            token = instance.create_contributor("fuzzer")
            yield instance, token
    except ThrowawayError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: tuple[ThrowawayInstance, str]) -> Any:
    instance, _token = fuzzed_server
    return schemathesis.openapi.from_url(f"{instance.base_url}/api/schema/")


@pytest.fixture(scope="module")
def database(fuzzed_server: tuple[ThrowawayInstance, str]) -> Iterator[psycopg.Connection[Any]]:
    instance, _token = fuzzed_server
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


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_under_generated_input(
    mode: GenerationMode,
    api_schema: Any,
    fuzzed_server: tuple[ThrowawayInstance, str],
    database: psycopg.Connection[Any],
) -> None:
    instance, token = fuzzed_server
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
        f"\nfuzzing ({mode.value}): {len(operations)} operations, {examples} examples, "
        f"{len(failures)} failures; no case of this mode for {unsatisfiable}"
    )
    assert len(operations) >= 16
    assert examples >= len(operations)
    assert failures == [], "\n".join(failures[:30])
