"""
The trigger that keeps FileStore.total_size equal to the sizes of the files in the store.

(The default rows every instance has are created after each migrate: see db/defaults.py.)
"""

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


class Migration(migrations.Migration):
    dependencies = [("db", "0001_initial")]

    operations = [
        migrations.RunSQL(TOTAL_SIZE_TRIGGER, DROP_TOTAL_SIZE_TRIGGER),
    ]
