"""`debusine-admin list_tokens`: old spelling of `token list`, kept for scripts."""

from debusine.server.management.commands import token


class Command(token.Command):
    alias_verb = "list"
