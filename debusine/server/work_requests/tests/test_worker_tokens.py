"""Tests of the one resolver of worker tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from debusine.server.db.models import Token
from debusine.server.work_requests.worker_tokens import WorkerCaller, resolve_worker_token
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db


def test_a_usable_worker_token_resolves_to_its_worker(playground: Playground) -> None:
    worker, key = playground.create_worker("builder")
    worker.concurrency = 3
    worker.save()

    assert resolve_worker_token(f"  {key}\n") == WorkerCaller(worker.pk, "builder", 3)


def test_resolving_renews_the_lease(playground: Playground) -> None:
    worker, key = playground.create_worker()
    assert worker.token is not None
    long_ago = timezone.now() - timedelta(hours=1)
    Token.objects.filter(pk=worker.token.pk).update(last_seen_at=long_ago)

    assert resolve_worker_token(key) is not None

    worker.token.refresh_from_db()
    assert worker.token.last_seen_at is not None
    assert worker.token.last_seen_at > long_ago + timedelta(minutes=59)


@pytest.mark.parametrize("case", ["disabled", "expired", "user", "no worker", "unknown", "empty"])
def test_other_keys_resolve_to_nobody(playground: Playground, case: str) -> None:
    worker, key = playground.create_worker()
    assert worker.token is not None
    if case == "disabled":
        worker.token.disable()
    elif case == "expired":
        Token.objects.filter(pk=worker.token.pk).update(
            expire_at=timezone.now() - timedelta(seconds=1)
        )
    elif case == "user":
        # A token of a user and a worker never authenticates the worker.
        Token.objects.filter(pk=worker.token.pk).update(user=playground.create_user())
    elif case == "no worker":
        _token, key = Token.objects.create_with_key(enabled=True)
    elif case == "unknown":
        key = "0" * 64
    else:
        key = " "

    assert resolve_worker_token(key) is None
