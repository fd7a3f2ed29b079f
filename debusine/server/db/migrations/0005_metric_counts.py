"""
Counts of work requests, artifacts and collections, and the queue and run time histograms of
work requests, kept by statement-level triggers (see `debusine.server.db.models.metrics`).

The bucket bounds are those of `debusine.server.metrics.families` (QUEUE_SECONDS_BUCKETS,
RUN_SECONDS_BUCKETS), frozen here: a change of bounds is a new migration.
"""

from django.db import migrations, models

BOUNDS = "ARRAY[1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400]::float8[]"

BUCKET_FUNCTION = """
CREATE FUNCTION db_metric_bucket(value float8, bounds float8[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(
        (SELECT min(bound)::text FROM unnest(bounds) AS bound WHERE value <= bound), '+Inf')
$$;
"""

WORK_REQUEST_KEY = """jsonb_build_object(
    'workspace', r.workspace_id, 'task_type', r.task_type, 'task_name', r.task_name,
    'status', r.status, 'host_architecture', coalesce(r.task_data->>'host_architecture', ''))"""
ARTIFACT_KEY = "jsonb_build_object('workspace', r.workspace_id, 'category', r.category)"
COLLECTION_KEY = ARTIFACT_KEY


def histogram_sql(family: str, seconds: str, condition: str) -> str:
    """Deltas of one histogram of work requests, for the rows where `condition` became true."""
    return f"""
    INSERT INTO db_metriccountdelta (family, key, count, total)
    SELECT '{family}', jsonb_build_object(
               'task_type', task_type, 'task_name', task_name,
               'host_architecture', host_architecture, 'le', db_metric_bucket(seconds, {BOUNDS})),
           count(*), sum(seconds)
    FROM (
        SELECT r.task_type, r.task_name,
               coalesce(r.task_data->>'host_architecture', '') AS host_architecture,
               greatest(extract(epoch FROM {seconds})::float8, 0) AS seconds
        FROM old_rows AS o JOIN new_rows AS r ON r.id = o.id
        WHERE {condition}
    ) AS observed
    GROUP BY 2;
"""


def counting_sql(table: str, family: str, key: str, extra_on_update: str = "") -> str:
    """Functions and triggers keeping the counts of `table` by `key` (over `r`)."""
    return f"""
CREATE FUNCTION {table}_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO db_metriccountdelta (family, key, count, total)
    SELECT '{family}', {key}, count(*), 0 FROM new_rows AS r GROUP BY 2;
    RETURN NULL;
END $$;

CREATE FUNCTION {table}_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO db_metriccountdelta (family, key, count, total)
    SELECT '{family}', {key}, -count(*), 0 FROM old_rows AS r GROUP BY 2;
    RETURN NULL;
END $$;

CREATE FUNCTION {table}_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Every old row counts -1 and every new row +1: unchanged keys cancel out.
    INSERT INTO db_metriccountdelta (family, key, count, total)
    SELECT '{family}', key, sum(change), 0 FROM (
        SELECT {key} AS key, -1 AS change FROM old_rows AS r
        UNION ALL
        SELECT {key} AS key, 1 AS change FROM new_rows AS r
    ) AS changes
    GROUP BY key HAVING sum(change) <> 0;
    {extra_on_update}
    RETURN NULL;
END $$;

CREATE TRIGGER {table}_count_insert AFTER INSERT ON {table}
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {table}_count_insert();
CREATE TRIGGER {table}_count_delete AFTER DELETE ON {table}
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {table}_count_delete();
CREATE TRIGGER {table}_count_update AFTER UPDATE ON {table}
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION {table}_count_update();

INSERT INTO db_metriccount (family, key, count, total)
SELECT '{family}', {key}, count(*), 0 FROM {table} AS r GROUP BY 2;
"""


def drop_counting_sql(table: str) -> str:
    return "\n".join(
        f"DROP TRIGGER {table}_count_{event} ON {table};\nDROP FUNCTION {table}_count_{event}();"
        for event in ("insert", "delete", "update")
    )


WORK_REQUEST_HISTOGRAMS = histogram_sql(
    "work_request_queue_seconds",
    "r.started_at - r.created_at",
    "o.started_at IS NULL AND r.started_at IS NOT NULL",
) + histogram_sql(
    "work_request_run_seconds",
    "r.completed_at - r.started_at",
    "o.completed_at IS NULL AND r.completed_at IS NOT NULL AND r.started_at IS NOT NULL",
)

CREATE_SQL = (
    BUCKET_FUNCTION
    + counting_sql("db_workrequest", "work_requests", WORK_REQUEST_KEY, WORK_REQUEST_HISTOGRAMS)
    + counting_sql("db_artifact", "artifacts", ARTIFACT_KEY)
    + counting_sql("db_collection", "collections", COLLECTION_KEY)
)

DROP_SQL = (
    drop_counting_sql("db_workrequest")
    + drop_counting_sql("db_artifact")
    + drop_counting_sql("db_collection")
    + "\nDROP FUNCTION db_metric_bucket(float8, float8[]);"
)


class Migration(migrations.Migration):
    dependencies = [("db", "0004_fileupload_sha256_state")]

    operations = [
        migrations.CreateModel(
            name="MetricCount",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("family", models.CharField(max_length=64)),
                ("key", models.JSONField()),
                ("count", models.BigIntegerField(default=0)),
                ("total", models.FloatField(default=0.0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("family", "key"), name="db_metriccount_unique")
                ],
            },
        ),
        migrations.CreateModel(
            name="MetricCountDelta",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("family", models.CharField(max_length=64)),
                ("key", models.JSONField()),
                ("count", models.BigIntegerField()),
                ("total", models.FloatField(default=0.0)),
            ],
        ),
        migrations.RunSQL(CREATE_SQL, DROP_SQL),
    ]
