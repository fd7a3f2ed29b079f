"""
URL configuration of the web side: pages and artifact downloads.

Pages of one workspace live under `/<scope>/<workspace>/` (the `url` fields of the API point
there); pages that belong to no scope under `/-/` (scope names start with a letter).
"""

from django.urls import URLPattern, path

from debusine.server.web import (
    accounts,
    artifacts,
    assets,
    collections,
    downloads,
    failures,
    log_search,
    matrix,
    work_requests,
    worker_pools,
    workers,
    workspaces,
)

SCOPED = "<str:scope>/<str:workspace>/"

urlpatterns: list[URLPattern] = [
    path("", workspaces.home, name="web-home"),
    path("-/static/<str:name>", assets.asset, name="web-asset"),
    path("-/signin/", accounts.SignInView.as_view(), name="web-sign-in"),
    path("-/signout/", accounts.sign_out, name="web-sign-out"),
    path("-/user/tokens/", accounts.tokens, name="web-tokens"),
    path(
        "-/user/tokens/<int:token_id>/<str:action>/",
        accounts.token_action,
        name="web-token-action",
    ),
    path("-/workers/", workers.worker_list, name="web-workers"),
    path("-/workers/<str:name>/<str:action>/", workers.worker_action, name="web-worker-action"),
    path("-/worker-pools/", worker_pools.pool_list, name="web-worker-pools"),
    path("-/worker-pools/<str:name>/", worker_pools.pool_detail, name="web-worker-pool"),
    path("-/queue/", workers.queue_status, name="web-queue"),
    path("<str:scope>/", workspaces.scope_home, name="web-scope"),
    path(SCOPED, workspaces.workspace_home, name="web-workspace"),
    path(f"{SCOPED}work-request/", work_requests.work_request_list, name="web-work-requests"),
    path(f"{SCOPED}failed/", failures.failed_list, name="web-failed"),
    path(f"{SCOPED}results/", matrix.results_matrix, name="web-results"),
    path(f"{SCOPED}collection/", collections.collection_list, name="web-collections"),
    path(
        f"{SCOPED}collection/<str:category>/<str:name>/",
        collections.collection_detail,
        name="web-collection",
    ),
    path(f"{SCOPED}failed/retry/", failures.retry_failed, name="web-failed-retry"),
    path(
        f"{SCOPED}work-request/<int:work_request_id>/",
        work_requests.work_request_detail,
        name="web-work-request",
    ),
    path(
        f"{SCOPED}work-request/<int:work_request_id>/status/",
        work_requests.work_request_status,
        name="web-work-request-status",
    ),
    path(
        f"{SCOPED}work-request/<int:work_request_id>/live-log/",
        work_requests.live_log,
        name="web-work-request-live-log",
    ),
    path(
        f"{SCOPED}work-request/<int:work_request_id>/logs/search/",
        log_search.search_logs,
        name="web-work-request-log-search",
    ),
    path(
        f"{SCOPED}work-request/<int:work_request_id>/retry/",
        work_requests.retry,
        name="web-work-request-retry",
    ),
    path(
        f"{SCOPED}work-request/<int:work_request_id>/abort/",
        work_requests.abort,
        name="web-work-request-abort",
    ),
    path(
        f"{SCOPED}work-request/<int:work_request_id>/unblock/",
        work_requests.unblock,
        name="web-work-request-unblock",
    ),
    path(f"{SCOPED}artifact/<int:artifact_id>/", artifacts.artifact_detail, name="web-artifact"),
    path(
        f"{SCOPED}artifact/<int:artifact_id>/file/<path:path>",
        artifacts.file_view,
        name="web-artifact-file",
    ),
    path(
        f"{SCOPED}artifact/<int:artifact_id>/download/",
        downloads.download_artifact,
        name="artifact-download",
    ),
    path(
        f"{SCOPED}artifact/<int:artifact_id>/download/<path:path>",
        downloads.download_artifact_file,
        name="artifact-file-download",
    ),
]
