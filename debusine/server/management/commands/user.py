"""`debusine-admin user`: create users."""

from __future__ import annotations

import argparse
import secrets
from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import User
from debusine.server.management.base import NounCommand, fail, save_validated


class Command(NounCommand):
    help = "Manage users: create (Django's changepassword and createsuperuser do the rest)."

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(
            verbs,
            "create",
            "Create a user and print its generated password (the only time it is shown).",
        )
        create.add_argument("username", metavar="USERNAME")
        create.add_argument("email", metavar="EMAIL")

    def verb_create(self, *, username: str, email: str, **_: Any) -> None:
        if User.objects.filter(username=username).exists():
            fail(f"user {username!r} already exists")
        password = secrets.token_urlsafe(16)
        user = User(username=username, email=email)
        user.set_password(password)
        # Validation checks the username's characters and the e-mail address.
        save_validated(user)
        self.write(password)
