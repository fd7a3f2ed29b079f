"""
Celery entry points of periodic housekeeping (default `celery` queue).

`fold_metric_counts`: fold the metric count deltas (`debusine.server.db.models.metrics`).

Scrapes fold the deltas the triggers append; beat also asks for a fold every minute, so that
they do not pile up on an instance nobody scrapes (`service-status` reads them too).
"""

from __future__ import annotations

from django.db import transaction

from debusine.server.db.models.metrics import fold_metric_deltas
from debusine.server.project.celery import app

#: Celery name of the job (beat sends it by name).
FOLD_COUNTS_JOB = "debusine.metrics.fold_counts"


@app.task(name=FOLD_COUNTS_JOB, ignore_result=True)
def fold_metric_counts() -> None:
    """Move the pending deltas into the totals (nothing when a scrape is folding them)."""
    with transaction.atomic():
        fold_metric_deltas()
