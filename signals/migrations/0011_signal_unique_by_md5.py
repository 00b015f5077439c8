"""Signals unique by (type, MD5 of the value as a uuid) instead of (type, value).

A b-tree row holds at most 2,704 bytes, which capped a stored vpdq video at 32 frames; an MD5
is 16 bytes whatever the value's length. The new index is built before the old one goes, so
uniqueness holds throughout (both are built under the table's lock, as a normal migration).
"""

import django.db.models.functions.comparison
import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("signals", "0010_entry_signal_unindexed"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="signal",
            constraint=models.UniqueConstraint(
                models.F("type"),
                django.db.models.functions.comparison.Cast(
                    django.db.models.functions.text.MD5("value"), models.UUIDField()
                ),
                name="signal_type_value_md5",
            ),
        ),
        migrations.RemoveConstraint(
            model_name="signal",
            name="signal_type_value",
        ),
    ]
