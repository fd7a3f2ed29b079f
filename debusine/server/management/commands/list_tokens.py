"""`debusine-admin list_tokens`: list API tokens (never their keys, which are not stored)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from debusine.server.db.models import Token
from debusine.server.management.base import AdminCommand, add_yaml_option, get_user

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


class Command(AdminCommand):
    help = "List API tokens: hash prefix, owner, state and dates. Keys are never shown."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", help="only the tokens of this user")
        add_yaml_option(parser)

    def run(self, *, username: str | None, yaml: bool, **_: Any) -> None:
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
