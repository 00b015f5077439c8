"""``hashx.store.sync``: a local copy that follows the feed, resumes, and survives purges."""

import pytest
from django.utils import timezone

from hashx import Client
from hashx.errors import HashxError
from hashx.store import LocalStore, sync
from signals.actions import pulls
from signals.actions.expiry import do_purge_tombstones
from signals.models import SetEntry
from tests.signals.conftest import PDQ, merged, pdq, publish
from tests.signals.writer import start_writers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(exchange_url, subscriber):
    return Client(exchange_url, subscriber.private_key)


@pytest.fixture
def store(tmp_path):
    store = LocalStore(tmp_path / "copy")
    yield store
    store.close()


def server_state(hash_set):
    return {
        (hash_set.slug, e.type, e.value)
        for e in SetEntry.objects.filter(hash_set=hash_set, state="active")
    }


def test_an_interrupted_sync_resumes_from_its_last_checkpoint(
    client, store, publisher, shared_set, monkeypatch
):
    monkeypatch.setattr(pulls, "STREAM_PAGE", 5)
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(23)]))

    def stop_after_two_pages(applied):
        if applied >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(client, store, ["acme-csam"], progress=stop_after_two_pages)
    assert store.count() == 10 and store.cursor
    applied, _ = sync(client, store, ["acme-csam"])
    assert applied == 13
    assert store.values() == server_state(shared_set)


def test_a_cursor_past_tombstone_retention_falls_back_to_snapshots(
    client, store, publisher, shared_set
):
    merged(publish(publisher, "acme-csam", [pdq(n) for n in range(10)]))
    sync(client, store, ["acme-csam"])
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(0), pdq(1)]})
    merged(publish(publisher, "acme-csam", [pdq(10)]))
    later = timezone.now() + timezone.timedelta(days=365)
    assert do_purge_tombstones(now=later) == 2
    with pytest.raises(HashxError) as gone:
        client.changes(cursor=store.cursor, sets=["acme-csam"])
    assert gone.value.status == 410
    sync(client, store, ["acme-csam"])
    assert store.values() == server_state(shared_set)
    assert {v for _, _, v in store.values()} == set(PDQ[2:11])


def test_the_local_copy_equals_the_server_while_writers_race(
    client, store, publisher, subscriber, shared_set
):
    writers = start_writers([publisher, subscriber, publisher], shared_set, 20)
    syncs = 0
    while any(w.poll() is None for w in writers):
        sync(client, store, ["acme-csam"])
        syncs += 1
    assert all(w.wait() == 0 for w in writers)
    sync(client, store, ["acme-csam"])
    assert syncs > 3, "the client should have synced while the writers wrote"
    final = server_state(shared_set)
    assert len(final) > 50
    assert store.values() == final


def test_a_snapshot_taken_while_writers_race_plus_the_feed_after_it_is_the_final_state(
    client, publisher, subscriber, shared_set
):
    writers = start_writers([publisher, subscriber, publisher], shared_set, 20)
    snapshots = []
    while any(w.poll() is None for w in writers):
        *entries, end = client.snapshot("acme-csam")
        snapshots.append(({e["entry"]: e for e in entries}, end["cursor"]))
    assert all(w.wait() == 0 for w in writers)
    assert len(snapshots) > 2, "snapshots should have been taken while the writers wrote"
    final = server_state(shared_set)
    for entries, cursor in snapshots:
        # Everything the snapshot could not see comes after its cursor: apply it on top.
        for change in client.stream_changes(sets=["acme-csam"], cursor=cursor):
            if "entry" not in change:
                continue
            if change["state"] == "active":
                entries[change["entry"]] = change
            else:
                entries.pop(change["entry"], None)
        assert {(e["set"], e["type"], e["value"]) for e in entries.values()} == final
