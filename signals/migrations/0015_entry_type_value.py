"""Entries carry their signal's type and value, unique by (type, key, set) (the first half of
folding ``Signal`` into ``SetEntry``; 0016 drops the signals).

The values are copied from the signals; the new unique index is built before the old
(set, signal) one goes, so uniqueness holds throughout. Positions are not touched: no entry
changes for a reader of the feed.
"""

import django.db.models.functions.text
import django.db.models.lookups
from django.db import migrations, models

import signals.models


class Migration(migrations.Migration):
    dependencies = [
        ("signals", "0014_entry_contributor"),
    ]

    operations = [
        migrations.AddField(
            model_name="setentry",
            name="type",
            field=models.CharField(db_collation="C", default="", max_length=32),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="setentry",
            name="value",
            field=models.TextField(db_collation="C", default=""),
            preserve_default=False,
        ),
        migrations.RunSQL(
            "UPDATE signals_setentry e SET type = g.type, value = g.value"
            " FROM signals_signal g WHERE g.id = e.signal_id",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AddConstraint(
            model_name="setentry",
            constraint=models.UniqueConstraint(
                models.F("type"),
                models.Case(
                    models.When(
                        django.db.models.lookups.GreaterThan(
                            signals.models.OctetLength("value"), 256
                        ),
                        then=signals.models.Rpad(django.db.models.functions.text.MD5("value"), 257),
                    ),
                    default=models.F("value"),
                ),
                models.F("hash_set"),
                name="one_entry_per_set_value",
            ),
        ),
        migrations.RemoveConstraint(
            model_name="setentry",
            name="one_entry_per_set_signal",
        ),
    ]
