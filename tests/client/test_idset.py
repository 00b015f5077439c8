"""The entry-id set a checkpoint carries: what the fetcher holds, compact and JSON-friendly."""

import json

import pytest

from hashx.idset import IdSet


def test_it_keeps_ids_across_chunks_and_through_json():
    ids = {0, 7, 8, 65_535, 65_536, 1_000_003, 99_999_999}
    held = IdSet()
    for entry in ids:
        held.add(entry)
    copy = IdSet(json.loads(json.dumps(held.encoded())))
    assert list(copy) == sorted(ids) and len(copy) == len(ids)
    assert 65_536 in copy and 65_537 not in copy and "7" not in copy


def test_minus_gives_what_is_held_and_was_not_seen():
    held, seen = IdSet(), IdSet()
    for entry in range(10, 200_000, 7):
        held.add(entry)
    for entry in range(10, 200_000, 14):
        seen.add(entry)
    seen.add(3)  # seen but not held: never a deletion
    assert list(held.minus(seen)) == list(range(17, 200_000, 14))


def test_emptied_chunks_leave_the_checkpoint_and_old_checkpoints_stay_as_they_were():
    held = IdSet()
    held.add(5)
    held.add(70_000)
    before = held.encoded()
    held.discard(70_000)
    held.discard(123_456_789)  # never held
    after = held.encoded()
    assert set(before) == {"0", "1"} and set(after) == {"0"}
    assert list(IdSet(before)) == [5, 70_000] and list(IdSet(after)) == [5]
    # Contiguous ids compress to almost nothing.
    for entry in range(1_000_000):
        held.add(entry)
    assert len(json.dumps(held.encoded())) < 2_000


def test_a_damaged_bitmap_is_refused():
    with pytest.raises(ValueError, match="bytes"):
        list(IdSet({"0": "eJwDAAAAAAE="}))
