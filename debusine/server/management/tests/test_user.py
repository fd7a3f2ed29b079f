"""Tests of `debusine-admin user create`."""

from __future__ import annotations

from debusine.server.db.models import User
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error


def test_user_create_prints_a_working_password(db: None) -> None:
    password = run("user", "create", "carol", "carol@example.org").strip()

    user = User.objects.get(username="carol")
    assert user.email == "carol@example.org"
    assert len(password) >= 16
    assert user.check_password(password)


def test_user_create_errors_change_nothing(db: None) -> None:
    run("user", "create", "carol", "carol@example.org")

    assert run_fails("user", "create", "carol", "other@example.org") == (
        "user 'carol' already exists"
    )
    assert run_fails("user", "create", "dave", "not-an-address").startswith("email: ")
    assert run_fails("user", "create", "bad name!", "d@example.org").startswith("username: ")
    assert set(User.objects.values_list("username", flat=True)) == {"_system", "carol"}
    run_usage_error("user", "create", "dave")
