"""The database itself refuses to change or remove audit events.

PostgreSQL: a trigger refuses UPDATE and DELETE on every row. SQLite (the embedded
demo mode): a trigger refuses UPDATE; DELETE stays possible there because Django's
``flush`` (used by the test runner) deletes rows one table at a time, and a deletion
is still caught by ``audit_verify`` as a missing sequence number.
"""

from django.db import migrations

PG_CREATE = """
CREATE OR REPLACE FUNCTION psi_audit_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'psi_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER psi_audit_append_only
    BEFORE UPDATE OR DELETE ON psi_auditevent
    FOR EACH ROW EXECUTE FUNCTION psi_audit_refuse_change();
"""
PG_DROP = """
DROP TRIGGER IF EXISTS psi_audit_append_only ON psi_auditevent;
DROP FUNCTION IF EXISTS psi_audit_refuse_change();
"""
SQLITE_CREATE = """
CREATE TRIGGER psi_audit_append_only BEFORE UPDATE ON psi_auditevent
BEGIN
    SELECT RAISE(ABORT, 'psi_auditevent is append-only: UPDATE refused');
END;
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS psi_audit_append_only;"


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        sql = statements_by_vendor.get(schema_editor.connection.vendor)
        if sql:
            if schema_editor.connection.vendor == "sqlite":
                schema_editor.execute(sql)
            else:
                with schema_editor.connection.cursor() as cursor:
                    cursor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("psi", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": PG_CREATE, "sqlite": SQLITE_CREATE}),
            _run({"postgresql": PG_DROP, "sqlite": SQLITE_DROP}),
        )
    ]
