"""`debusine-admin delete_expired`: old spelling of `instance delete_expired`, kept for scripts."""

from debusine.server.management.commands import instance


class Command(instance.Command):
    alias_verb = "delete_expired"
