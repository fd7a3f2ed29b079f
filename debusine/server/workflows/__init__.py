"""
Workflows: server-side orchestrators that create trees of work requests (reference §3.5).

- `base`: the `Workflow` class, its registry and the helpers orchestrators use;
- `orchestration`: what the server does with the work requests it runs itself (Workflow,
  Internal and Wait task types), and the periodic sweep that catches up on lost messages;
- their Celery entry points, in the `workflows` queue, are in `debusine.server.workflows_queue`;
- the workflows: `noop`, and `debian` (sbuild, lintian, autopkgtest, piuparts, qa,
  debian_pipeline). Importing this package registers every workflow.
"""

from debusine.server.workflows import debian, noop
from debusine.server.workflows.base import Workflow

__all__ = ["Workflow", "debian", "noop"]
