"""`debusine-admin delete_tokens`: delete user API tokens, after confirmation."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import Token
from debusine.server.management.base import AdminCommand, fail, get_user


class Command(AdminCommand):
    help = (
        "Delete API tokens: those of one user (--username), one token (--token), or every "
        "user token. Worker tokens are not deleted here: use `worker disable`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--username", help="delete the tokens of this user")
        which.add_argument("--token", metavar="KEY", help="delete the token with this key")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def run(self, *, username: str | None, token: str | None, yes: bool, **_: Any) -> None:
        # Tokens of workers (and activation tokens) belong to `worker` commands.
        tokens = Token.objects.filter(worker__isnull=True, activating_worker__isnull=True)
        if username is not None:
            tokens = tokens.filter(user=get_user(username))
        elif token is not None:
            found = Token.objects.get_by_key(token)
            if found is None:
                fail("no token has this key")
            if not tokens.filter(pk=found.pk).exists():
                fail("this key is a worker's token: use `worker disable` instead")
            tokens = tokens.filter(pk=found.pk)
        count = tokens.count()
        if count == 0:
            self.write("No tokens to delete")
            return
        if not yes and not self.confirm(f"Delete {count} token(s)? [y/N] "):
            fail("cancelled: nothing deleted")
        tokens.delete()
        self.write(f"Deleted {count} token(s)")
