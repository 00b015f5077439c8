"""PDQ near-duplicates found at ingest: counted in the batch, linked to the nearest entry."""

import pytest

from signals.actions.sets import do_update_set
from signals.models import SetEntry
from tests.signals.conftest import merged, publish
from tests.signals.test_match import FAR, near

pytestmark = pytest.mark.django_db(transaction=True)


def signals(*values):
    return [{"type": "pdq", "value": v} for v in values]


def entry_of(value):
    return SetEntry.objects.get(signal__type="pdq", signal__value=value)


def test_a_new_hash_near_an_existing_entry_is_counted_and_linked_to_the_nearest(
    publisher, subscriber, shared_set
):
    merged(publish(publisher, "acme-csam", signals(FAR[0], near(FAR[0], 12))))
    batch = merged(publish(publisher, "acme-csam", signals(near(FAR[0], 9), FAR[1])))
    assert (batch.new, batch.near_duplicates) == (2, 1)
    variant = entry_of(near(FAR[0], 9))
    # 9 bits from the original, but only 3 from the 12-bit variant: the nearest wins.
    assert variant.near_duplicate_of_id == entry_of(near(FAR[0], 12)).pk
    assert variant.near_duplicate_distance == 3
    assert entry_of(FAR[1]).near_duplicate_of_id is None
    answer = subscriber.api.get("/api/v1/changes?sets=acme-csam").json()
    links = {c["value"]: c["near_duplicate_of"] for c in answer["changes"]}
    assert links[near(FAR[0], 9)] == entry_of(near(FAR[0], 12)).pk
    report = publisher.api.get(f"/api/v1/batches/{batch.pk}").json()
    assert report["near_duplicates"] == 1


def test_the_set_threshold_bounds_what_counts_as_a_near_duplicate(publisher, shared_set):
    do_update_set(shared_set, {"pdq_threshold": 8})
    merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": FAR[0]}]))
    batch = merged(publish(publisher, "acme-csam", signals(near(FAR[0], 9), near(FAR[0], 200))))
    assert batch.near_duplicates == 0


def test_entries_of_other_sets_are_not_near_duplicates(publisher, shared_set):
    from signals.actions.sets import do_create_set

    do_create_set(publisher.org, {"slug": "acme-other", "name": "Other"})
    merged(publish(publisher, "acme-other", [{"type": "pdq", "value": FAR[0]}]))
    batch = merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": near(FAR[0], 2)}]))
    assert batch.near_duplicates == 0


def test_near_duplicates_at_ingest_can_be_switched_off(settings, publisher, shared_set):
    settings.HASHX_MATCH_NEAR_DUPLICATES = False
    merged(publish(publisher, "acme-csam", signals(FAR[0])))
    batch = merged(publish(publisher, "acme-csam", signals(near(FAR[0], 3))))
    assert batch.near_duplicates == 0
    assert entry_of(near(FAR[0], 3)).near_duplicate_of_id is None
