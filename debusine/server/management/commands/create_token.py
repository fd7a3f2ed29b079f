"""`debusine-admin create_token`: create an enabled API token for a user and print its key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import Token
from debusine.server.management.base import AdminCommand, fail, get_user

#: Length of Token.comment.
MAX_COMMENT_LENGTH = 100


class Command(AdminCommand):
    help = (
        "Create an enabled API token for a user and print its key. Only a hash is stored: "
        "the key cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", metavar="USERNAME")
        parser.add_argument("--comment", default="", help="what the token is for")

    def run(self, *, username: str, comment: str, **_: Any) -> None:
        user = get_user(username)
        if len(comment) > MAX_COMMENT_LENGTH:
            fail(f"the comment is longer than {MAX_COMMENT_LENGTH} characters")
        _token, key = Token.objects.create_with_key(user=user, enabled=True, comment=comment)
        self.write(key)
