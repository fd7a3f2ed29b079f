"""`debusine-admin create_user`: old spelling of `user create`, kept for scripts."""

from debusine.server.management.commands import user


class Command(user.Command):
    alias_verb = "create"
