"""
Scope budgets across worker pools (`ScopeWorkerPoolLimits`), and the queue-to-start histogram
of work requests started by pool workers, kept by a statement-level trigger as the other
histograms are (`0005_metric_counts`; bounds: `families.POOL_SECONDS_BUCKETS`, frozen here).
The boot-to-ready histogram is recorded by the provisioner (`worker_pools.instances`).
"""

import django.db.models.deletion
from django.db import migrations, models

BOUNDS = "ARRAY[1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400]::float8[]"

CREATE_SQL = f"""
CREATE FUNCTION db_workrequest_pool_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO db_metriccountdelta (family, key, count, total)
    SELECT 'worker_pool_queue_seconds',
           jsonb_build_object('worker_pool', p.name, 'architecture', started.architecture,
                              'le', db_metric_bucket(started.seconds, {BOUNDS})),
           count(*), sum(started.seconds)
    FROM (
        SELECT r.worker_id,
               coalesce(r.task_data->>'host_architecture', '') AS architecture,
               greatest(extract(epoch FROM r.started_at - r.created_at)::float8, 0) AS seconds
        FROM old_rows AS o JOIN new_rows AS r ON r.id = o.id
        WHERE o.started_at IS NULL AND r.started_at IS NOT NULL AND r.worker_id IS NOT NULL
    ) AS started
    JOIN db_worker w ON w.id = started.worker_id
    JOIN db_workerpool p ON p.id = w.worker_pool_id
    GROUP BY 2;
    RETURN NULL;
END $$;

CREATE TRIGGER db_workrequest_pool_queue AFTER UPDATE ON db_workrequest
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION db_workrequest_pool_queue();
"""

DROP_SQL = """
DROP TRIGGER db_workrequest_pool_queue ON db_workrequest;
DROP FUNCTION db_workrequest_pool_queue();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("db", "0009_workrequest_web_ui_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="ScopeWorkerPoolLimits",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                ("target_max_seconds_per_month", models.PositiveBigIntegerField()),
                (
                    "scope",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="worker_pool_limits",
                        to="db.scope",
                    ),
                ),
            ],
        ),
        migrations.RunSQL(CREATE_SQL, DROP_SQL),
    ]
