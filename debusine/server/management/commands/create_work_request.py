"""`create_work_request`: old spelling of `work_request create`, kept for scripts."""

from debusine.server.management.commands import work_request


class Command(work_request.Command):
    alias_verb = "create"
