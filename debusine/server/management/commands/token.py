"""`debusine-admin token`: create, list and delete the API tokens of users."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import Token
from debusine.server.management.base import NounCommand, add_yaml_option, fail, get_user

#: Length of Token.comment.
MAX_COMMENT_LENGTH = 100

#: How much of the stored hash identifies a token in listings.
HASH_PREFIX_LENGTH = 12


def token_owner(token: Token) -> str:
    """Who uses the token: a user name, `worker:NAME`, or `activation:NAME`."""
    if token.user is not None:
        return token.user.username
    worker = getattr(token, "worker", None)
    if worker is not None:
        return f"worker:{worker.name}"
    activating = getattr(token, "activating_worker", None)
    if activating is not None:
        return f"activation:{activating.name}"
    return "-"


class Command(NounCommand):
    help = "Manage the API tokens of users: create, list, delete. Keys are never stored."

    def add_verbs(self, verbs: argparse._SubParsersAction[CommandParser]) -> None:
        create = self.add_verb(
            verbs,
            "create",
            "Create an enabled API token for a user and print its key. Only a hash is stored: "
            "the key cannot be shown again.",
        )
        create.add_argument("username", metavar="USERNAME")
        create.add_argument("--comment", default="", help="what the token is for")

        listing = self.add_verb(
            verbs,
            "list",
            "List API tokens: hash prefix, owner, state and dates. Keys are never shown.",
        )
        listing.add_argument("--username", help="only the tokens of this user")
        add_yaml_option(listing)

        delete = self.add_verb(
            verbs,
            "delete",
            "Delete API tokens: those of one user (--username), one token (--token), or every "
            "user token. Worker tokens are not deleted here: use `worker disable`.",
        )
        which = delete.add_mutually_exclusive_group()
        which.add_argument("--username", help="delete the tokens of this user")
        which.add_argument("--token", metavar="KEY", help="delete the token with this key")
        delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def verb_create(self, *, username: str, comment: str, **_: Any) -> None:
        user = get_user(username)
        if len(comment) > MAX_COMMENT_LENGTH:
            fail(f"the comment is longer than {MAX_COMMENT_LENGTH} characters")
        _token, key = Token.objects.create_with_key(user=user, enabled=True, comment=comment)
        self.write(key)

    def verb_list(self, *, username: str | None, yaml: bool, **_: Any) -> None:
        tokens = Token.objects.select_related("user", "worker", "activating_worker").order_by(
            "created_at", "pk"
        )
        if username is not None:
            tokens = tokens.filter(user=get_user(username))
        rows = [
            {
                "hash": token.hash[:HASH_PREFIX_LENGTH],
                "owner": token_owner(token),
                "enabled": token.enabled,
                "comment": token.comment,
                "created_at": token.created_at,
                "expire_at": token.expire_at,
                "last_seen_at": token.last_seen_at,
            }
            for token in tokens
        ]
        if yaml:
            self.write_yaml(rows)
            return
        self.write_table(
            ["HASH", "OWNER", "ENABLED", "CREATED", "EXPIRES", "LAST SEEN", "COMMENT"],
            [
                [
                    row["hash"],
                    row["owner"],
                    row["enabled"],
                    row["created_at"],
                    row["expire_at"],
                    row["last_seen_at"],
                    row["comment"] or "-",
                ]
                for row in rows
            ],
        )

    def verb_delete(self, *, username: str | None, token: str | None, yes: bool, **_: Any) -> None:
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
