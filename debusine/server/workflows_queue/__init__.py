"""
The Celery side of the workflow engine: the jobs of the `workflows` queue and the hooks that
queue them (`jobs`). Kept apart from `debusine.server.workflows` (the orchestrators), which the
API imports, because Celery code imports the project's Celery application.
"""
