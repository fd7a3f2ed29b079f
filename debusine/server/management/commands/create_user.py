"""`debusine-admin create_user`: create a user and print a generated password."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import User
from debusine.server.management.base import AdminCommand, fail, save_validated


class Command(AdminCommand):
    help = "Create a user and print its generated password (the only time it is shown)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", metavar="USERNAME")
        parser.add_argument("email", metavar="EMAIL")

    def run(self, *, username: str, email: str, **_: Any) -> None:
        if User.objects.filter(username=username).exists():
            fail(f"user {username!r} already exists")
        password = secrets.token_urlsafe(16)
        user = User(username=username, email=email)
        user.set_password(password)
        # Validation checks the username's characters and the e-mail address.
        save_validated(user)
        self.write(password)
