"""
Make the audit log append-only in the database itself.

Row triggers refuse UPDATE and DELETE, a statement trigger refuses TRUNCATE: whoever connects,
the table's owner included, can only add rows. (Only a superuser or the owner dropping the
triggers gets around them, and the hash chain then shows what was changed.)
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION signing_auditlog_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'signing_auditlog is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER signing_auditlog_no_update_or_delete
    BEFORE UPDATE OR DELETE ON signing_auditlog
    FOR EACH ROW EXECUTE FUNCTION signing_auditlog_refuse_change();
CREATE TRIGGER signing_auditlog_no_truncate
    BEFORE TRUNCATE ON signing_auditlog
    FOR EACH STATEMENT EXECUTE FUNCTION signing_auditlog_refuse_change();
"""

BACKWARD = """
DROP TRIGGER signing_auditlog_no_truncate ON signing_auditlog;
DROP TRIGGER signing_auditlog_no_update_or_delete ON signing_auditlog;
DROP FUNCTION signing_auditlog_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("signing", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
