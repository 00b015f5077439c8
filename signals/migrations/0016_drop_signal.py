"""Signals folded into entries (0015 copied their type and value): entries no longer point to a
signal, and the table of signals goes. Nothing needs it: every lookup of a value across sets
goes through the entries' (type, key, set) index, and the resync bookkeeping of federation
names entries since federation 0005.

Reversible: unapplied, the signals are rebuilt from the entries' (type, value) and every entry
points to its own again.
"""

import django.db.models.deletion
from django.db import migrations, models

REBUILD_SIGNALS = """
INSERT INTO signals_signal (type, value)
SELECT DISTINCT type, value FROM signals_setentry ORDER BY type, value;
UPDATE signals_setentry e SET signal_id = g.id
FROM signals_signal g WHERE g.type = e.type AND g.value = e.value;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("signals", "0015_entry_type_value"),
        ("federation", "0005_resync_seen_entries"),
    ]

    operations = [
        # Nullable first, so that unapplied, the column comes back empty and is filled before it
        # is NOT NULL again.
        migrations.AlterField(
            model_name="setentry",
            name="signal",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="entries",
                to="signals.signal",
            ),
        ),
        migrations.RunSQL(migrations.RunSQL.noop, reverse_sql=REBUILD_SIGNALS),
        migrations.RemoveField(
            model_name="setentry",
            name="signal",
        ),
        migrations.DeleteModel(
            name="Signal",
        ),
    ]
