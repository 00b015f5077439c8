"""A resync's bookkeeping names the mirror's entries rather than signals (signals are folded
into entries: signals 0015 and 0016).

Rows of a resync under way are carried over to the entry of their signal in the mirror's set
(and back, unapplied), through negative ids so that no row takes a key another still holds; a
row without an entry named nothing the resync applied, and goes.
"""

from django.db import migrations

TO_ENTRIES = """
UPDATE federation_resyncseen s SET signal_id = -e.id
FROM federation_mirroredset m, signals_setentry e
WHERE m.id = s.mirror_id AND e.hash_set_id = m.hash_set_id AND e.signal_id = s.signal_id;
DELETE FROM federation_resyncseen WHERE signal_id > 0;
UPDATE federation_resyncseen SET signal_id = -signal_id;
"""

TO_SIGNALS = """
UPDATE federation_resyncseen s SET signal_id = -e.signal_id
FROM signals_setentry e WHERE e.id = s.signal_id;
DELETE FROM federation_resyncseen WHERE signal_id > 0;
UPDATE federation_resyncseen SET signal_id = -signal_id;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("federation", "0004_mirrors_per_origin_set"),
        ("signals", "0015_entry_type_value"),
    ]

    operations = [
        migrations.RunSQL(TO_ENTRIES, reverse_sql=TO_SIGNALS),
        migrations.RenameField(
            model_name="resyncseen",
            old_name="signal_id",
            new_name="entry_id",
        ),
    ]
