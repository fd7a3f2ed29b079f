"""
Default rows every instance has, and the trigger that keeps FileStore.total_size.

A fresh database gets the `_system` user, the scope `debusine`, its public workspace `System`
and the local file store `Default` used by that scope.
"""

from typing import Any

from django.db import migrations

TOTAL_SIZE_TRIGGER = """
CREATE FUNCTION db_filestore_total_size() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE db_filestore SET total_size = total_size
            + (SELECT size FROM db_file WHERE id = NEW.file_id)
        WHERE id = NEW.store_id;
        RETURN NEW;
    ELSE
        UPDATE db_filestore SET total_size = total_size
            - (SELECT size FROM db_file WHERE id = OLD.file_id)
        WHERE id = OLD.store_id;
        RETURN OLD;
    END IF;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER db_fileinstore_total_size
AFTER INSERT OR DELETE ON db_fileinstore
FOR EACH ROW EXECUTE FUNCTION db_filestore_total_size();
"""

DROP_TOTAL_SIZE_TRIGGER = """
DROP TRIGGER db_fileinstore_total_size ON db_fileinstore;
DROP FUNCTION db_filestore_total_size();
"""


def create_defaults(apps: Any, schema_editor: Any) -> None:
    User = apps.get_model("db", "User")
    Scope = apps.get_model("db", "Scope")
    Workspace = apps.get_model("db", "Workspace")
    FileStore = apps.get_model("db", "FileStore")
    FileStoreInScope = apps.get_model("db", "FileStoreInScope")

    User.objects.get_or_create(
        username="_system",
        defaults={"is_system": True, "first_name": "Debusine", "last_name": "System"},
    )
    scope, _ = Scope.objects.get_or_create(name="debusine", defaults={"label": "Debusine"})
    Workspace.objects.get_or_create(scope=scope, name="System", defaults={"public": True})
    store, _ = FileStore.objects.get_or_create(
        name="Default", defaults={"backend": "Local", "configuration": {}}
    )
    FileStoreInScope.objects.get_or_create(scope=scope, file_store=store)


class Migration(migrations.Migration):
    dependencies = [("db", "0001_initial")]

    operations = [
        migrations.RunSQL(TOTAL_SIZE_TRIGGER, DROP_TOTAL_SIZE_TRIGGER),
        migrations.RunPython(create_defaults, migrations.RunPython.noop),
    ]
