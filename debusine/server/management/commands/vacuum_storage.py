"""`debusine-admin vacuum_storage`: old spelling of `file_store vacuum`, kept for scripts."""

from debusine.server.management.commands import file_store


class Command(file_store.Command):
    alias_verb = "vacuum"
