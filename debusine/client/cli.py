"""
The `debusine` command: work requests, artifacts and workflows from a terminal or a script.

Output is YAML on stdout. Exit codes: 0 success, 2 bad arguments or unusable local input, 3
server, network or configuration errors (one line on stderr, `debusine: error: ...`).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import pydantic
import yaml

from debusine.client import debian_artifacts
from debusine.client.client import DebusineClient, LocalFile
from debusine.client.completion_listener import CompletionListener
from debusine.client.config import (
    ServerConfig,
    check_api_url,
    default_config_path,
    read_config,
    select_server,
    write_server,
)
from debusine.client.errors import ClientError, LocalFileError, UsageError
from debusine.client.progress import TransferProgress
from debusine.protocol.artifacts import LenientArtifactResponse, check_artifact_path
from debusine.protocol.work_requests import LenientWorkRequestResponse, ManualUnblockAction

Handler = Callable[[argparse.Namespace, "Context"], Any]


class Context:
    """What a command needs: the parsed options, output streams, and a client made on demand."""

    def __init__(self, options: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> None:
        self.options = options
        self.stdout = stdout
        self.stderr = stderr
        self._client: DebusineClient | None = None

    @property
    def config_path(self) -> Path:
        explicit: str | None = self.options.config_file
        return Path(explicit) if explicit else default_config_path()

    def server(self) -> ServerConfig:
        parser = read_config(self.config_path)
        return select_server(parser, self.config_path, self.options.server, self.options.scope)

    def client(self) -> DebusineClient:
        if self._client is None:
            server = self.server()
            self._client = DebusineClient(
                server.api_url,
                server.token,
                server.scope,
                debug=self.stderr if self.options.debug else None,
                progress=TransferProgress.for_stderr(silent=self.options.silent),
            )
        return self._client

    def web_url(self, relative: str | None, api_path: str) -> str:
        """
        An absolute web URL from a relative one the server gave (`/scope/ws/...`); the API
        URL at `api_path` when the server gave none (Debusine 0.11 servers do not).
        """
        if relative is None:
            return self.client().url(api_path)
        return urljoin(self.client().api_url + "/", relative)

    def work_request_url(self, work_request: LenientWorkRequestResponse) -> str:
        return self.web_url(work_request.url, f"work-request/{work_request.id}/")

    def artifact_url(self, artifact: LenientArtifactResponse) -> str:
        return self.web_url(artifact.url, f"artifact/{artifact.id}/")

    def info(self, message: str) -> None:
        if not self.options.silent:
            print(message, file=self.stderr)


def print_yaml(context: Context, value: Any) -> None:
    yaml.safe_dump(
        value, context.stdout, sort_keys=False, allow_unicode=True, default_flow_style=False
    )


# --- Reading local input ---------------------------------------------------------------------


def read_yaml_mapping(source: str, what: str, stdin: IO[str]) -> dict[str, Any]:
    """A YAML mapping from a file, or from stdin for `-`; empty documents are refused."""
    try:
        text = stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {what} from {source}: {error.strerror}") from None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{what} in {source} is not valid YAML: {error}") from None
    if value is None:
        raise UsageError(f"{what} in {source} is empty; give at least `{{}}`")
    if not isinstance(value, dict):
        raise UsageError(f"{what} in {source} must be a YAML mapping")
    return value


def iso_datetime_argument(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date and time") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be positive")
    return number


# --- Work requests ---------------------------------------------------------------------------


def list_work_requests(options: argparse.Namespace, context: Context) -> None:
    work_requests = context.client().work_request_iter(limit=options.limit)
    print_yaml(context, [item.model_dump(mode="json") for item in work_requests])


def show_work_request(options: argparse.Namespace, context: Context) -> None:
    client = context.client()
    work_request = client.work_request_get(options.work_request_id)
    shown = work_request.model_dump(mode="json")
    shown["artifacts"] = [
        client.artifact_get(artifact_id).model_dump(mode="json")
        for artifact_id in work_request.artifacts
    ]
    print_yaml(context, shown)
    if options.follow:
        follow_live_log(client, work_request.id)


#: Seconds between two reads of a live log.
FOLLOW_INTERVAL = 1.0
#: Statuses after which a live log grows no more.
FINISHED = ("completed", "aborted")


def follow_live_log(client: DebusineClient, work_request_id: int) -> None:
    """
    Print the live log of a work request as it grows (stdout and stderr lines as the task
    wrote them, `internal` ones prefixed `# `), until the work request has finished and every
    frame has been read.
    """
    position = 0
    while True:
        frames, position, status = client.work_request_live_log(work_request_id, position)
        for frame in frames:
            if frame.get("type") == "log_data":
                text = str(frame.get("data", ""))
                if frame.get("stream") == "internal":
                    text = "".join(f"# {line}\n" for line in text.splitlines())
                stream = sys.stderr if frame.get("stream") == "stderr" else sys.stdout
                stream.write(text)
            elif frame.get("type") == "log_data_end":
                print(f"# command exited with {frame.get('exit_code')}")
        sys.stdout.flush()
        if not frames and status in FINISHED:
            return
        if not frames:
            time.sleep(FOLLOW_INTERVAL)


def create_work_request(options: argparse.Namespace, context: Context) -> None:
    task_data = read_yaml_mapping(options.data, "task data", sys.stdin)
    event_reactions = (
        read_yaml_mapping(options.event_reactions, "event reactions", sys.stdin)
        if options.event_reactions
        else {}
    )
    work_request = context.client().work_request_create(
        options.task_name,
        task_data,
        workspace=options.workspace,
        event_reactions=event_reactions,
    )
    print_yaml(
        context,
        {
            "result": "success",
            "message": f"Work request registered: {context.work_request_url(work_request)}",
            "work_request_id": work_request.id,
        },
    )


def manage_work_request(options: argparse.Namespace, context: Context) -> None:
    if options.set_priority_adjustment is None:
        raise UsageError("nothing to change: give --set-priority-adjustment N")
    work_request = context.client().work_request_set_priority_adjustment(
        options.work_request_id, options.set_priority_adjustment
    )
    print_yaml(context, work_request.model_dump(mode="json"))


def retry_work_request(options: argparse.Namespace, context: Context) -> None:
    work_request = context.client().work_request_retry(options.work_request_id)
    print_yaml(context, work_request.model_dump(mode="json"))


def abort_work_request(options: argparse.Namespace, context: Context) -> None:
    work_request = context.client().work_request_abort(options.work_request_id)
    print_yaml(context, work_request.model_dump(mode="json"))


def manual_unblock(options: argparse.Namespace, context: Context) -> None:
    if options.notes is None and options.action is None:
        raise UsageError("nothing to record: give --notes TEXT, --accept or --reject")
    try:
        work_request = context.client().work_request_unblock(
            options.work_request_id,
            notes=options.notes,
            action=None if options.action is None else ManualUnblockAction(options.action),
        )
    except pydantic.ValidationError as error:
        raise UsageError(f"invalid review: {error.errors()[0]['msg']}") from None
    print_yaml(context, work_request.model_dump(mode="json"))


# --- Workflows -------------------------------------------------------------------------------


def create_workflow_template(options: argparse.Namespace, context: Context) -> None:
    task_data = read_yaml_mapping(options.data, "task data", sys.stdin) if options.data else {}
    template = context.client().workflow_template_create(
        options.name,
        options.task_name,
        task_data,
        priority=options.priority,
        workspace=options.workspace,
    )
    print_yaml(context, {"result": "success", **template.model_dump(mode="json")})


def create_workflow(options: argparse.Namespace, context: Context) -> None:
    task_data = read_yaml_mapping(options.data, "task data", sys.stdin) if options.data else {}
    workflow = context.client().workflow_create(
        options.template_name, task_data, workspace=options.workspace
    )
    print_yaml(
        context,
        {
            "result": "success",
            "message": f"Workflow created: {context.work_request_url(workflow)}",
            "workflow_id": workflow.id,
        },
    )


def workflow_summary(work_request: LenientWorkRequestResponse) -> dict[str, Any]:
    """What listings show of a workflow or a step."""
    summary: dict[str, Any] = {
        "id": work_request.id,
        "task_type": str(work_request.task_type),
        "task_name": work_request.task_name,
        "status": str(work_request.status),
        "result": str(work_request.result),
    }
    for key in ("step", "display_name", "group"):
        if key in work_request.workflow_data:
            summary[key] = work_request.workflow_data[key]
    return summary


def workflow_tree(client: DebusineClient, workflow: LenientWorkRequestResponse) -> dict[str, Any]:
    """A workflow and its steps (the newest of each retried step), sub-workflows expanded."""
    node = workflow_summary(workflow)
    by_step: dict[str, LenientWorkRequestResponse] = {}
    # Newest first: the oldest are read first, so the newest of a retried step wins.
    for child in reversed(list(client.work_request_iter(filters={"parent": str(workflow.id)}))):
        by_step[str(child.workflow_data.get("step", child.id))] = child
    node["children"] = [
        workflow_tree(client, child) if child.task_type == "Workflow" else workflow_summary(child)
        for child in sorted(by_step.values(), key=lambda item: item.id)
    ]
    return node


def list_workflows(options: argparse.Namespace, context: Context) -> None:
    workflows = context.client().work_request_iter(
        limit=options.limit, filters={"task_type": "Workflow", "root_only": "true"}
    )
    print_yaml(context, [workflow_summary(item) for item in workflows])


def show_workflow(options: argparse.Namespace, context: Context) -> None:
    client = context.client()
    workflow = client.work_request_get(options.workflow_id)
    if workflow.task_type != "Workflow":
        raise UsageError(
            f"work request {workflow.id} is a {workflow.task_type} task, not a workflow"
        )
    print_yaml(context, workflow_tree(client, workflow))


def retry_workflow(options: argparse.Namespace, context: Context) -> None:
    workflow = context.client().work_request_retry(options.workflow_id)
    print_yaml(context, workflow_summary(workflow))


def abort_workflow(options: argparse.Namespace, context: Context) -> None:
    workflow = context.client().work_request_abort(options.workflow_id)
    print_yaml(context, workflow_summary(workflow))


# --- Artifacts -------------------------------------------------------------------------------


def files_to_offer(paths: Sequence[str], base_directory: str | None) -> dict[str, LocalFile]:
    """Artifact path -> local file: relative to the base directory, else the file's name."""
    base = Path(base_directory).resolve() if base_directory else None
    files: dict[str, LocalFile] = {}
    for given in paths:
        path = Path(given)
        if path.is_dir():
            raise UsageError(f"{given} is a directory, not a file")
        if not path.is_file():
            raise UsageError(f"{given}: no such file")
        if base is not None:
            try:
                name = path.resolve().relative_to(base).as_posix()
            except ValueError:
                raise UsageError(f"{given} is not inside {base_directory}") from None
        else:
            name = path.name
        try:
            check_artifact_path(name)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if name in files:
            raise UsageError(f"two files would have the same artifact path {name!r}")
        files[name] = LocalFile.from_path(path)
    return files


def _create_and_upload(
    context: Context,
    category: str,
    files: dict[str, LocalFile],
    data: dict[str, Any],
    options: argparse.Namespace,
) -> LenientArtifactResponse:
    client = context.client()
    artifact = client.artifact_create(
        category, files, data, workspace=options.workspace, expire_at=options.expire_at
    )
    client.upload_artifact_files(artifact, files)
    return artifact


def create_artifact(options: argparse.Namespace, context: Context) -> None:
    data = read_yaml_mapping(options.data, "artifact data", sys.stdin) if options.data else {}
    files = files_to_offer(options.upload or [], options.upload_base_directory)
    artifact = _create_and_upload(context, options.category, files, data, options)
    print_yaml(
        context,
        {
            "result": "success",
            "message": f"New artifact created: {context.artifact_url(artifact)}",
            "artifact_id": artifact.id,
            "files_to_upload": len(artifact.files_to_upload),
            "expire_at": artifact.expire_at.isoformat() if artifact.expire_at else None,
        },
    )


def import_debian_artifact(options: argparse.Namespace, context: Context) -> None:
    prepared = debian_artifacts.prepare(Path(options.file))
    client = context.client()
    created = [
        _create_and_upload(context, item.category, item.files, item.data, options)
        for item in prepared
    ]
    primary, related = created[0], created[1:]
    for artifact in related:
        client.relation_create(primary.id, artifact.id, "extends")
        client.relation_create(primary.id, artifact.id, "relates-to")
    print_yaml(
        context,
        {
            "result": "success",
            "message": f"New artifact created: {context.artifact_url(primary)}",
            "artifact_id": primary.id,
            "category": primary.category,
            "extends": [{"artifact_id": a.id, "category": a.category} for a in related],
            "relates_to": [{"artifact_id": a.id, "category": a.category} for a in related],
        },
    )


def download_artifact(options: argparse.Namespace, context: Context) -> None:
    client = context.client()
    artifact = client.artifact_get(options.artifact_id)
    target = Path(options.target_directory)
    if not target.is_dir():
        raise UsageError(f"{target} is not a directory")
    if options.tarball:
        destination = target / f"artifact-{artifact.id}.tar.gz"
        size = client.download_tarball(artifact, destination)
        print_yaml(
            context,
            {
                "result": "success",
                "artifact_id": artifact.id,
                "tarball": str(destination),
                "size": size,
            },
        )
        return
    for name, file in sorted(artifact.files.items()):
        try:
            check_artifact_path(name)
        except ValueError as error:
            raise ClientError(f"the server lists an unsafe path: {error}") from None
        destination = target / name
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LocalFileError.from_os_error(error, destination.parent, "create") from None
        client.download_file(name, file, destination)
    print_yaml(
        context,
        {
            "result": "success",
            "artifact_id": artifact.id,
            "target_directory": str(target),
            "files": sorted(artifact.files),
        },
    )


def show_artifact(options: argparse.Namespace, context: Context) -> None:
    artifact = context.client().artifact_get(options.artifact_id)
    print_yaml(context, artifact.model_dump(mode="json"))


def show_artifact_relations(options: argparse.Namespace, context: Context) -> None:
    relations = context.client().relation_list(options.artifact_id, reverse=options.reverse)
    print_yaml(context, [relation.model_dump(mode="json") for relation in relations])


# --- Listening -------------------------------------------------------------------------------


def on_work_request_completed(options: argparse.Namespace, context: Context) -> None:
    cursor = Path(options.last_completed_at) if options.last_completed_at else None
    listener = CompletionListener(
        context.client(),
        [options.command, *options.arguments],
        workspaces=options.workspace,
        cursor_file=cursor,
        log=context.stderr,
    )
    listener.url()  # refuses an unreadable cursor file before connecting
    context.info(f"Listening for completed work requests on {context.client().api_url}")
    listener.run_forever()


# --- Setup -----------------------------------------------------------------------------------


def _ask(context: Context, prompt: str, default: str | None, *, secret: bool = False) -> str:
    if not sys.stdin.isatty():
        raise UsageError(f"{prompt} is needed: give it as an option (stdin is not a terminal)")
    suffix = f" [{default}]" if default else ""
    answer = (getpass.getpass if secret else input)(f"{prompt}{suffix}: ").strip()
    return answer or default or ""


def setup(options: argparse.Namespace, context: Context) -> None:
    api_url = options.api_url or _ask(
        context, "API URL (e.g. https://debusine.example.org/api)", None
    )
    try:
        api_url = check_api_url(api_url)
    except ClientError as error:
        raise UsageError(str(error)) from None
    parts = urlsplit(api_url)
    if parts.scheme != "https" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        print(f"warning: {api_url} is not https: the token travels in clear", file=context.stderr)
    name = options.server_name or _ask(context, "Server name", parts.hostname)
    scope = options.setup_scope or options.scope or _ask(context, "Scope", "debusine")
    token = options.token or _ask(context, "Token (from the server's web UI)", None, secret=True)
    if not name or not scope:
        raise UsageError("a server name and a scope are needed")
    server = ServerConfig(name=name, api_url=api_url, scope=scope, token=token or None)
    path = context.config_path
    write_server(path, server, make_default=options.default)
    print_yaml(context, {"result": "success", "config_file": str(path), "server": name})


# --- Argument parsing ------------------------------------------------------------------------


def _add_workspace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", help="workspace name (default: the server's default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="debusine",
        description="Command-line client of a Debusine server (REST API 1.0). Output is YAML.",
        epilog=(
            "Configuration: ~/.config/debusine/client/config.ini ([General] default-server, "
            "[server:NAME] api-url, scope, token); create it with `debusine setup`. "
            "Exit codes: 0 success, 2 bad arguments or a local file that cannot be read or "
            "written, 3 server, network or configuration error."
        ),
    )
    parser.add_argument("--server", help="server section NAME of the configuration, or FQDN/SCOPE")
    parser.add_argument("--scope", help="scope to use instead of the configured one")
    parser.add_argument(
        "--config-file", help="configuration file (default: %(default)s)", default=None
    )
    parser.add_argument(
        "-s", "--silent", action="store_true", help="no progress bars or informational messages"
    )
    parser.add_argument(
        "-d",
        "--debug",
        action="store_true",
        help="print HTTP requests and responses on stderr (token hidden)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("setup", setup, "Add a server to the configuration file (written mode 0600).")
    sub.add_argument("--server-name", help="name of the [server:NAME] section")
    sub.add_argument("--api-url", help="API URL, e.g. https://debusine.example.org/api")
    sub.add_argument("--scope", dest="setup_scope", help="scope name (e.g. debusine)")
    sub.add_argument("--token", help="API token (asked for without echo when omitted)")
    sub.add_argument(
        "--default",
        action="store_true",
        help="make it the default server (the first server always is)",
    )

    sub = command("list-work-requests", list_work_requests, "List work requests, newest first.")
    sub.add_argument("--limit", type=positive_int, help="show at most N work requests")

    sub = command(
        "show-work-request", show_work_request, "Show a work request and the artifacts it created."
    )
    sub.add_argument("work_request_id", type=positive_int, metavar="ID")
    sub.add_argument(
        "--follow",
        action="store_true",
        help="then print its live log as its worker streams it (Debusine 0.16 workers), "
        "until it has finished",
    )

    sub = command("create-work-request", create_work_request, "Create a work request.")
    sub.add_argument("task_name", metavar="TASK", help="task name, e.g. noop")
    _add_workspace(sub)
    sub.add_argument(
        "--data", default="-", help="YAML file with the task data, `-` for stdin (default)"
    )
    sub.add_argument("--event-reactions", metavar="FILE", help="YAML file of event reactions")

    sub = command("manage-work-request", manage_work_request, "Change a work request.")
    sub.add_argument("work_request_id", type=positive_int, metavar="ID")
    sub.add_argument(
        "--set-priority-adjustment",
        type=int,
        metavar="N",
        help="priority adjustment (positive values need a permission)",
    )

    sub = command(
        "retry-work-request", retry_work_request, "Retry a failed or aborted work request."
    )
    sub.add_argument("work_request_id", type=positive_int, metavar="ID")

    sub = command(
        "abort-work-request",
        abort_work_request,
        "Abort a pending, blocked or running work request.",
    )
    sub.add_argument("work_request_id", type=positive_int, metavar="ID")

    sub = command(
        "manual-unblock",
        manual_unblock,
        "Review a blocked manual-unblock work request: record notes, accept it (it becomes "
        "pending) or reject it (it is aborted).",
    )
    sub.add_argument("work_request_id", type=positive_int, metavar="ID")
    sub.add_argument(
        "--notes", metavar="TEXT", help="review notes to record (up to 65536 characters)"
    )
    decision = sub.add_mutually_exclusive_group()
    decision.add_argument(
        "--accept", dest="action", action="store_const", const="accept", help="let it run"
    )
    decision.add_argument(
        "--reject", dest="action", action="store_const", const="reject", help="abort it"
    )

    sub = command(
        "create-workflow-template", create_workflow_template, "Create a workflow template."
    )
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("task_name", metavar="TASK", help="workflow name, e.g. noop or sbuild")
    _add_workspace(sub)
    sub.add_argument("--data", metavar="FILE", help="YAML file with the task data (`-`: stdin)")
    sub.add_argument("--priority", type=int, default=0, help="base priority (default 0)")

    sub = command("create-workflow", create_workflow, "Start a workflow from a template.")
    sub.add_argument("template_name", metavar="TEMPLATE")
    _add_workspace(sub)
    sub.add_argument("--data", metavar="FILE", help="YAML file with the task data (`-`: stdin)")

    sub = command("list-workflows", list_workflows, "List workflows (newest first).")
    sub.add_argument("--limit", type=positive_int, metavar="N", help="show at most N")

    sub = command(
        "show-workflow", show_workflow, "Show a workflow's tree of steps, with statuses."
    )
    sub.add_argument("workflow_id", type=positive_int, metavar="ID")

    sub = command(
        "retry-workflow",
        retry_workflow,
        "Retry a failed or aborted workflow: only its failed and aborted steps run again.",
    )
    sub.add_argument("workflow_id", type=positive_int, metavar="ID")

    sub = command("abort-workflow", abort_workflow, "Abort a workflow and all its steps.")
    sub.add_argument("workflow_id", type=positive_int, metavar="ID")

    sub = command(
        "create-artifact",
        create_artifact,
        "Create an artifact and upload its files (resumable, SHA-256 verified).",
    )
    sub.add_argument("category", metavar="CATEGORY", help="e.g. debusine:test")
    _add_workspace(sub)
    sub.add_argument("--upload", nargs="+", metavar="FILE", help="files to put in the artifact")
    sub.add_argument(
        "--upload-base-directory",
        metavar="DIR",
        help="artifact paths are relative to DIR (default: file names only)",
    )
    sub.add_argument(
        "--expire-at",
        type=iso_datetime_argument,
        metavar="DATETIME",
        help="ISO 8601 expiry (servers may ignore it)",
    )
    sub.add_argument("--data", metavar="FILE", help="YAML file with the artifact data")

    sub = command(
        "import-debian-artifact",
        import_debian_artifact,
        "Create artifacts from a .changes, .dsc, .deb or .udeb and link them.",
    )
    sub.add_argument("file", metavar="FILE")
    _add_workspace(sub)
    sub.add_argument(
        "--expire-at",
        type=iso_datetime_argument,
        metavar="DATETIME",
        help="ISO 8601 expiry (servers may ignore it)",
    )

    sub = command(
        "download-artifact",
        download_artifact,
        "Download an artifact's files (SHA-256 checked), or its tarball.",
    )
    sub.add_argument("artifact_id", type=positive_int, metavar="ID")
    sub.add_argument(
        "--target-directory",
        default=".",
        metavar="DIR",
        help="where to write (default: the current directory)",
    )
    sub.add_argument(
        "--tarball", action="store_true", help="save artifact-ID.tar.gz instead of the files"
    )

    sub = command("show-artifact", show_artifact, "Show an artifact.")
    sub.add_argument("artifact_id", type=positive_int, metavar="ID")

    sub = command(
        "show-artifact-relations", show_artifact_relations, "Show the relations of an artifact."
    )
    sub.add_argument("artifact_id", type=positive_int, metavar="ID")
    sub.add_argument(
        "--reverse",
        action="store_true",
        help="relations pointing at the artifact instead of from it",
    )

    sub = command(
        "on-work-request-completed",
        on_work_request_completed,
        "Run COMMAND ARGS... ID RESULT for each work request that completes.",
    )
    sub.add_argument(
        "--workspace", action="append", help="only this workspace (repeat for several)"
    )
    sub.add_argument(
        "--last-completed-at",
        metavar="FILE",
        help="JSON file keeping the last completion handled; replays from it",
    )
    sub.add_argument("command", metavar="COMMAND")
    sub.add_argument("arguments", nargs=argparse.REMAINDER, metavar="ARGS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    context = Context(options, sys.stdout, sys.stderr)
    handler: Handler = options.handler
    try:
        handler(options, context)
    except ClientError as error:
        message = str(error).replace("\n", " ")
        print(f"debusine: error: {message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`| head`) is gone: stop quietly, and keep Python's exit flush quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as error:
        # A local file or directory the handlers did not name themselves (network errors are
        # ClientErrors by now): still one line and exit 2, never a traceback.
        reason = error.strerror or str(error) or type(error).__name__
        message = f"{error.filename}: {reason}" if error.filename else reason
        print(f"debusine: error: {message}".replace("\n", " "), file=sys.stderr)
        return UsageError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
