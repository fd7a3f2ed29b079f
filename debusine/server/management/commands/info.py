"""`debusine-admin info`: old spelling of `instance show`, kept for scripts."""

from debusine.server.management.commands import instance


class Command(instance.Command):
    alias_verb = "show"
