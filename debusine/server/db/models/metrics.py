"""
Counts of rows kept up to date by PostgreSQL triggers, so that a metrics scrape never counts a
large table.

Statement-level triggers on work requests, artifacts and collections (migration
`0005_metric_counts`) append *deltas* (`MetricCountDelta`): inserting rows never waits for
another transaction, whereas updating one shared counter row would serialise every transition
of every work request of the same task. `fold_metric_deltas()` (run by each scrape) moves the
deltas into the totals (`MetricCount`). A count is the sum of its total and its pending deltas.

Families and their keys (a JSON object of label values):

- `work_requests`: workspace, task_type, task_name, status, host_architecture ("" for none);
- `artifacts`, `collections`: workspace, category;
- `work_request_queue_seconds`, `work_request_run_seconds` (histograms: `count` is the number
  of observations, `total` their sum): task_type, task_name, host_architecture, le (the upper
  bound of the bucket the observation fell in, "+Inf" above the last one).
"""

from __future__ import annotations

from typing import Any

from django.db import connection, models

#: Advisory lock key of the fold: one fold at a time (a concurrent scrape just reads).
FOLD_LOCK_KEY = 0x646D6574  # "dmet"

# Deltas move into the totals in one statement (one round trip), when no other fold holds the
# lock: the rows it deletes are the rows it adds. The transaction need not wait for its commit
# to reach the disk: a fold lost in a crash leaves the deltas where they were.
FOLD_SQL = """
WITH relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true)
), locked AS (
    SELECT pg_try_advisory_xact_lock(%s) AS locked FROM relaxed
), moved AS (
    DELETE FROM db_metriccountdelta WHERE (SELECT locked FROM locked)
    RETURNING family, key, count, total
)
INSERT INTO db_metriccount (family, key, count, total)
SELECT family, key, sum(count), sum(total) FROM moved GROUP BY family, key
ON CONFLICT (family, key) DO UPDATE
SET count = db_metriccount.count + EXCLUDED.count, total = db_metriccount.total + EXCLUDED.total
"""

CURRENT_COUNTS_SQL = """
SELECT family, key, sum(count), sum(total) FROM (
    SELECT family, key, count, total FROM db_metriccount
    UNION ALL
    SELECT family, key, count, total FROM db_metriccountdelta
) AS counts
GROUP BY family, key
"""


class MetricCount(models.Model):
    """The total count of one family and key, as of the last fold."""

    family = models.CharField(max_length=64)
    key = models.JSONField()
    count = models.BigIntegerField(default=0)
    total = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["family", "key"], name="db_metriccount_unique")
        ]

    def __str__(self) -> str:
        return f"{self.family} {self.key}: {self.count}"


class MetricCountDelta(models.Model):
    """A change to a count made by one statement, not folded into `MetricCount` yet."""

    family = models.CharField(max_length=64)
    key = models.JSONField()
    count = models.BigIntegerField()
    total = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"{self.family} {self.key}: {self.count:+d}"


def fold_metric_deltas() -> None:
    """
    Move the pending deltas into the totals, in the caller's transaction; do nothing when
    another fold holds the lock (the counts read meanwhile add up the deltas anyway).
    """
    with connection.cursor() as cursor:
        cursor.execute(FOLD_SQL, [FOLD_LOCK_KEY])


def current_metric_counts() -> list[tuple[str, dict[str, Any], int, float]]:
    """Every (family, key, count, sum of observations): totals plus pending deltas."""
    import json

    with connection.cursor() as cursor:
        cursor.execute(CURRENT_COUNTS_SQL)
        rows = cursor.fetchall()
    return [
        (family, key if isinstance(key, dict) else json.loads(key), int(count), float(total))
        for family, key, count, total in rows
    ]
