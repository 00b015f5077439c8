"""Signals folded into entries (0015 copied their type and value): entries no longer point to a
signal, and the table of signals goes. Nothing needs it: every lookup of a value across sets
goes through the entries' (type, key, set) index, and the resync bookkeeping of federation
names entries since federation 0005.

Not reversible: the signals would have to be rebuilt from the entries.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("signals", "0015_entry_type_value"),
        ("federation", "0005_resync_seen_entries"),
    ]

    operations = [
        # No reverse: unapplying this migration stops here, before anything is undone.
        migrations.RunSQL("SELECT 1"),
        migrations.RemoveField(
            model_name="setentry",
            name="signal",
        ),
        migrations.DeleteModel(
            name="Signal",
        ),
    ]
