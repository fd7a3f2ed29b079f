"""`debusine-admin delete_tokens`: old spelling of `token delete`, kept for scripts."""

from debusine.server.management.commands import token


class Command(token.Command):
    alias_verb = "delete"
