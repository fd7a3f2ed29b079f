"""`debusine-admin create_token`: old spelling of `token create`, kept for scripts."""

from debusine.server.management.commands import token


class Command(token.Command):
    alias_verb = "create"
