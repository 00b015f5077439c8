"""The change-order invariant (DESIGN.md "Change feed"): a reader polling positions while
several processes write never skips a change and ends with exactly the final state."""

import json

import pytest

from signals.feed.positions import START, Position
from signals.feed.reads import rendered_after
from signals.models import SetEntry
from tests.signals.writer import start_writers

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_continuous_reader_misses_nothing_while_writers_race(publisher, subscriber, shared_set):
    writers = start_writers([publisher, subscriber, publisher], shared_set, 25)
    seen: dict[int, tuple] = {}
    cursor, reads, last = START, 0, Position(-1, -1)
    while True:
        running = any(w.poll() is None for w in writers)
        changes, cursor, _ = rendered_after(cursor, [shared_set.pk], limit=37)
        reads += 1
        for change in changes:
            assert change.position > last, "positions must only ever grow"
            last = change.position
            record = json.loads(change.json)
            seen[record["entry"]] = (
                record["state"],
                record["contributors"],
                tuple(record["labels"]),
            )
        if not running and not changes:
            break
    assert all(w.wait() == 0 for w in writers)
    assert reads > 10, "the reader should have polled while the writers wrote"

    final = {
        e.pk: (e.state, e.contributor_count, tuple(e.labels))
        for e in SetEntry.objects.filter(hash_set=shared_set)
    }
    assert len(final) > 50
    assert seen == final
