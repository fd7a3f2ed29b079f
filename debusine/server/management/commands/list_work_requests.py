"""`debusine-admin list_work_requests`: old spelling of `work_request list`, kept for scripts."""

from debusine.server.management.commands import work_request


class Command(work_request.Command):
    alias_verb = "list"
