"""All models of the server, one module per aggregate."""

from debusine.protocol.work_requests import TaskType, WorkRequestResult, WorkRequestStatus
from debusine.server.db.models.artifacts import (
    Artifact,
    ArtifactRelation,
    ArtifactRelationType,
    File,
    FileInArtifact,
    FileUpload,
)
from debusine.server.db.models.assets import (
    Asset,
    AssetCategory,
    AssetRole,
    AssetRoles,
    AssetUsage,
    AssetUsageRole,
    AssetUsageRoles,
)
from debusine.server.db.models.auth import (
    Group,
    GroupMembership,
    GroupRoles,
    Token,
    User,
    generate_token_key,
    hash_token_key,
)
from debusine.server.db.models.collections import (
    Collection,
    CollectionItem,
    CollectionItemType,
    CollectionRelation,
    CollectionRelationType,
    CollectionRetention,
    CollectionTokenGrant,
    ExternalToken,
)
from debusine.server.db.models.file_stores import (
    FileInStore,
    FileStore,
    FileStoreBackend,
    FileStoreInScope,
)
from debusine.server.db.models.metrics import MetricCount, MetricCountDelta
from debusine.server.db.models.scopes import Scope, ScopeRole, ScopeRoles
from debusine.server.db.models.work_requests import RetryReason, UnblockStrategy, WorkRequest
from debusine.server.db.models.worker_pools import (
    ScopeWorkerPoolLimits,
    TerminationReason,
    WorkerPool,
    WorkerPoolStatistics,
)
from debusine.server.db.models.workers import Worker, WorkerType
from debusine.server.db.models.workflows import WorkflowTemplate
from debusine.server.db.models.workspaces import (
    Workspace,
    WorkspaceChain,
    WorkspaceRole,
    WorkspaceRoles,
)

__all__ = [
    "Artifact",
    "ArtifactRelation",
    "ArtifactRelationType",
    "Asset",
    "AssetCategory",
    "AssetRole",
    "AssetRoles",
    "AssetUsage",
    "AssetUsageRole",
    "AssetUsageRoles",
    "Collection",
    "CollectionItem",
    "CollectionItemType",
    "CollectionRelation",
    "CollectionRelationType",
    "CollectionRetention",
    "CollectionTokenGrant",
    "ExternalToken",
    "File",
    "FileInArtifact",
    "FileInStore",
    "FileStore",
    "FileStoreBackend",
    "FileStoreInScope",
    "FileUpload",
    "Group",
    "GroupMembership",
    "GroupRoles",
    "MetricCount",
    "MetricCountDelta",
    "RetryReason",
    "Scope",
    "ScopeRole",
    "ScopeRoles",
    "ScopeWorkerPoolLimits",
    "TaskType",
    "TerminationReason",
    "Token",
    "UnblockStrategy",
    "User",
    "WorkRequest",
    "WorkRequestResult",
    "WorkRequestStatus",
    "Worker",
    "WorkerPool",
    "WorkerPoolStatistics",
    "WorkerType",
    "WorkflowTemplate",
    "Workspace",
    "WorkspaceChain",
    "WorkspaceRole",
    "WorkspaceRoles",
    "generate_token_key",
    "hash_token_key",
]
