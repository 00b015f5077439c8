"""Make the audit tables append-only: UPDATE, DELETE and TRUNCATE are refused by triggers.

TRUNCATE alone can be allowed, per database, by the setting ``hashx.audit_allow_truncate``:
the test suite sets it on its throw-away test database so that transactional tests can reset
tables. No production database sets it; an owner who could set it could drop the triggers as
well, which is why the chain and signed checkpoints exist.
"""

from django.db import migrations

TABLES = ["audit_auditevent", "audit_auditseal", "audit_auditcheckpoint"]

FUNCTION = """
CREATE OR REPLACE FUNCTION hashx_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('hashx.audit_allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def create_triggers() -> str:
    statements = [FUNCTION]
    for table in TABLES:
        statements.append(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION hashx_audit_append_only();"
        )
        statements.append(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION hashx_audit_append_only();"
        )
    return "\n".join(statements)


def drop_triggers() -> str:
    statements = []
    for table in TABLES:
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table};")
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};")
    statements.append("DROP FUNCTION IF EXISTS hashx_audit_append_only();")
    return "\n".join(statements)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunSQL(create_triggers(), drop_triggers())]
