"""
Collection managers: how artifacts become items of a collection of each category, and the
category-specific lookups (`match:`, `source:`...). `CollectionManager.for_collection()` picks
the manager of a collection.
"""

from debusine.server.collections.base import (
    CollectionLookupError,
    CollectionManager,
    ItemAdditionError,
)
from debusine.server.collections.debian_environments import DebianEnvironmentsManager
from debusine.server.collections.debian_suite import DebianSuiteManager
from debusine.server.collections.workflow_internal import WorkflowInternalManager

__all__ = [
    "CollectionLookupError",
    "CollectionManager",
    "DebianEnvironmentsManager",
    "DebianSuiteManager",
    "ItemAdditionError",
    "WorkflowInternalManager",
]
