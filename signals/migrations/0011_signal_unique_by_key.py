"""Signals unique by (type, key) instead of (type, value), the key being the value up to 256
bytes and its MD5 padded to 257 bytes beyond (``signals.models.Signal``).

A b-tree row holds at most 2,704 bytes, which capped a stored vpdq video at 32 frames. The new
index is built before the old one goes, so uniqueness holds throughout.
"""

import django.db.models.functions.text
import django.db.models.lookups
from django.db import migrations, models

import signals.models


class Migration(migrations.Migration):
    dependencies = [
        ("signals", "0010_entry_signal_unindexed"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="signal",
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
                name="signal_type_key",
            ),
        ),
        migrations.RemoveConstraint(
            model_name="signal",
            name="signal_type_value",
        ),
    ]
