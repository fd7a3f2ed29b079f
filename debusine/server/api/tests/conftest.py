"""Fixtures shared by the API tests: authenticated clients and tokens of each kind."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from debusine.testing.playground import Playground, api_client


@pytest.fixture
def client(user_token: str) -> APIClient:
    """An API client authenticated as `user` (contributor of the default workspace)."""
    return api_client(user_token)


@pytest.fixture
def worker_token(playground: Playground) -> str:
    """The key of an enabled external worker's token."""
    _, key = playground.create_worker()
    return key


@pytest.fixture
def outsider_token(playground: Playground) -> str:
    """A user with no role anywhere (the default workspace is public: they can see it)."""
    return playground.create_user_token(playground.create_user("mallory"))
