"""The hashx python-threatexchange extension against a live exchange: the real `threatexchange`
CLI (its state under a temporary HOME) and the adapter driven the way HMA drives it."""

import os
import pickle
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from threatexchange.exchanges.fetch_state import SignalOpinion, SignalOpinionCategory
from threatexchange.signal_type.md5 import VideoMD5Signal
from threatexchange.signal_type.pdq.signal import PdqSignal
from threatexchange.utils import dataclass_json

from audit.models import AuditEvent
from hashx.client import Client
from hashx.keys import private_key_to_pem
from hashx.threatexchange import (
    HashxCheckpoint,
    HashxCollabConfig,
    HashxCredentials,
    HashxSignalExchangeAPI,
    HashxSignalMetadata,
)
from signals.actions.expiry import do_purge_tombstones
from signals.actions.sets import do_create_set, do_grant
from signals.models import Opinion, SetEntry
from tests.signals.conftest import far_apart

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

THREATEXCHANGE = str(Path(sys.executable).parent / "threatexchange")


# Far apart: matching one never finds another.
HASHES = far_apart()[:8]


@pytest.fixture
def exchange(exchange_url, celery_worker, publisher, subscriber):
    """A set of the publisher's, readable by the subscriber, on an exchange served over HTTP."""
    hash_set = do_create_set(
        publisher.org, {"slug": "acme-csam", "name": "Acme CSAM", "distribution": "granted"}
    )
    do_grant(hash_set, subscriber.org, can_read=True, can_publish=False)
    return exchange_url


@pytest.fixture
def owner(exchange, publisher):
    return Client(exchange, publisher.private_key)


def publish(client: Client, values: list[str], slug: str = "acme-csam") -> None:
    answer = client.publish(slug, [{"type": "pdq", "value": v, "labels": ["csam"]} for v in values])
    assert client.wait_for_batch(answer["batch"], poll=0.2)["state"] == "done"


@pytest.fixture
def key_file(tmp_path, subscriber):
    return subscriber.key_file(tmp_path / "globex.pem")


@pytest.fixture
def tx(tmp_path, key_file):
    """Run the real `threatexchange` CLI as the subscriber, with its state in tmp_path."""
    home = tmp_path / "home"
    home.mkdir()

    def run(*args, check=True, key=key_file):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HASHX_", "TX_"))}
        env["HOME"] = str(home)
        if key:
            env["HASHX_KEY"] = str(key)
        result = subprocess.run(
            [THREATEXCHANGE, *args], env=env, capture_output=True, text=True, timeout=120
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    run.home = home
    return run


def set_up_collab(tx, url, *flags):
    tx("config", "extensions", "add", "hashx.threatexchange")
    tx("config", "collab", "edit", "hashx", "acme", "--create", "--url", url,
       "--sets", "acme-csam", *flags)  # fmt: skip


def matches(tx, value):
    return tx("match", "-S", "pdq", "-H", "photo", "--", value).stdout


def stored_state(tx):
    [path] = (tx.home / ".threatexchange" / "fetched" / "hashx").glob("*.state.pickle")
    with path.open("rb") as f:
        return pickle.load(f)  # noqa: S301 - the CLI's own state file, written by this test


def test_the_cli_fetches_a_set_matches_it_and_forgets_a_retraction(exchange, owner, tx):
    publish(owner, HASHES[:3])
    set_up_collab(tx, exchange)
    assert "acme" in tx("config", "collab", "list").stdout

    tx("fetch")
    found = matches(tx, HASHES[0])
    assert "pdq 0 (acme) POSITIVE_CLASS csam" in found

    owner.retract("acme-csam", [{"type": "pdq", "value": HASHES[0]}])
    tx("fetch")
    assert matches(tx, HASHES[0]).strip() == ""
    assert "(acme)" in matches(tx, HASHES[1])


def test_an_interrupted_fetch_resumes_from_its_checkpoint(exchange, owner, tx):
    publish(owner, HASHES[:2])
    set_up_collab(tx, exchange, "--page-size", "2")
    tx("fetch")  # the set's snapshot, then the feed from the snapshot's cursor
    publish(owner, HASHES[2:8])

    tx("fetch", "--limit", "2")  # stops, and checkpoints, after one page of the feed
    first = stored_state(tx)
    assert len(first.updates) == 4 and first.checkpoint.cursor

    tx("fetch")
    assert len(stored_state(tx).updates) == 8
    pulls = AuditEvent.objects.filter(action="feed.pulled").order_by("id")
    # The last run asked for what follows the saved cursor, not for the whole set again.
    assert [event.details["from"] for event in pulls].count(first.checkpoint.cursor) == 1
    assert all("(acme)" in matches(tx, value) for value in HASHES[:8])


def test_the_cli_starts_over_from_snapshots_once_its_cursor_expired(exchange, owner, tx):
    publish(owner, HASHES[:3])
    set_up_collab(tx, exchange)
    tx("fetch")
    owner.retract("acme-csam", [{"type": "pdq", "value": HASHES[0]}])
    assert do_purge_tombstones(now=timezone.now() + timedelta(days=91)) == 1

    tx("fetch")  # 410: the checkpoint is marked stale, the local copy kept for now
    assert stored_state(tx).checkpoint.is_stale()
    tx("fetch")  # dropped and fetched again from the snapshot, without the purged signal
    state = stored_state(tx)
    assert not state.checkpoint.is_stale()
    assert {record.value for record in state.updates.values()} == set(HASHES[1:3])
    assert matches(tx, HASHES[0]).strip() == ""


def test_an_opinion_given_with_the_cli_reaches_the_exchange(exchange, owner, tx, subscriber):
    publish(owner, HASHES[:1])
    set_up_collab(tx, exchange)
    tx("label", "-H", "pdq", "-l", "seen-elsewhere", "acme", "photo", "--", HASHES[0])

    opinion = Opinion.objects.get(organisation=subscriber.org)
    assert (opinion.category, opinion.tags) == ("positive", ["seen-elsewhere"])
    assert SetEntry.objects.get(signal__value=HASHES[0]).positive_count == 1


def test_the_cli_says_how_to_give_the_key(exchange, tx, tmp_path, key_file):
    set_up_collab(tx, exchange)
    missing = tx("fetch", check=False, key=None)
    assert missing.returncode != 0 and "HASHX_KEY" in missing.stderr
    assert "~/.hashx_key" in missing.stderr
    (tx.home / ".hashx_key").write_text(f"{key_file}\n")  # the file holds the key's path
    tx("fetch", key=None)
    wrong = tx("fetch", check=False, key=tmp_path / "nowhere.pem")
    assert wrong.returncode != 0 and "Invalid credentials" in wrong.stderr
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(private_key_to_pem(Ed25519PrivateKey.generate()))
    refused = tx("fetch", check=False, key=stranger)
    assert refused.returncode == 3 and "acme - failed to fetch!" in refused.stderr
    # The CLI logs the reason once asked to be verbose: the exchange's problem document.
    assert "HashxError: 401 Unknown key" in tx("-v", "fetch", check=False, key=stranger).stderr


def hma_fetch(api, checkpoint, store):
    """What HMA's fetcher does with fetch_iter: merge deltas with dict.update, then commit each
    key (None deletes) and keep the checkpoint as JSON."""
    pending = None
    for delta in api.fetch_iter([PdqSignal, VideoMD5Signal], checkpoint):
        if checkpoint is not None and checkpoint.get_progress_timestamp() is not None:
            assert checkpoint.get_progress_timestamp() <= delta.checkpoint.get_progress_timestamp()
        checkpoint = delta.checkpoint
        if pending is None:
            pending = delta
        else:
            pending.updates.update(delta.updates)
            pending.checkpoint = delta.checkpoint
    assert pending is not None
    for key, value in pending.updates.items():
        if value is not None:  # HMA's other store keeps records as JSON
            as_json = dataclass_json.dataclass_dumps(value)
            assert dataclass_json.dataclass_loads(as_json, HashxSignalMetadata) == value
        if value is None:
            store.pop(str(key), None)
        elif HashxSignalExchangeAPI.naive_convert_to_signal_type(
            [PdqSignal], api.collab, {key: value}
        ):
            store[str(key)] = pickle.dumps(value)
    saved = dataclass_json.dataclass_dumps(pending.checkpoint)
    return dataclass_json.dataclass_loads(saved, HashxCheckpoint)


def signals_in(store):
    return {pickle.loads(blob).value for blob in store.values()}  # noqa: S301


def test_hma_fetches_in_pages_resumes_and_starts_over_after_a_410(exchange, owner, key_file):
    publish(owner, HASHES[:5])
    # As HMA's curation API creates an exchange (POST /c/exchanges) and stores its credentials
    # (POST /c/exchanges/api/hashx): JSON loaded into the dataclasses, kept as JSON.
    api_json = {"url": exchange, "sets": ["acme-csam"], "page_size": 2}
    api_json.update(name="HASHX_ACME", enabled=True, api="hashx")
    collab = dataclass_json.dataclass_load_dict(api_json, HashxCollabConfig)
    collab = dataclass_json.dataclass_loads(
        dataclass_json.dataclass_dumps(collab), HashxCollabConfig
    )
    creds = dataclass_json.dataclass_load_dict({"key": key_file.read_text()}, HashxCredentials)
    creds = dataclass_json.dataclass_loads(dataclass_json.dataclass_dumps(creds), HashxCredentials)
    # HMA hands stored credentials over as the helper's default, then calls for_collab.
    with HashxCredentials.set_default(creds, "db"):
        api = HashxSignalExchangeAPI.for_collab(collab)
    store: dict[str, bytes] = {}

    checkpoint = hma_fetch(api, None, store)
    assert signals_in(store) == set(HASHES[:5])
    assert pickle.loads(pickle.dumps(checkpoint)) == checkpoint  # noqa: S301
    assert not checkpoint.is_stale()

    owner.retract("acme-csam", [{"type": "pdq", "value": HASHES[0]}])
    publish(owner, HASHES[5:6])
    old = checkpoint
    checkpoint = hma_fetch(api, checkpoint, store)
    assert signals_in(store) == set(HASHES[1:6])
    assert checkpoint.get_progress_timestamp() >= old.get_progress_timestamp()

    # Tombstones purged past the cursor: the exchange answers 410, the checkpoint turns stale,
    # and HMA starts again from scratch with a clear store.
    owner.retract("acme-csam", [{"type": "pdq", "value": HASHES[1]}])
    assert do_purge_tombstones(now=timezone.now() + timedelta(days=91)) == 2
    stale = hma_fetch(api, checkpoint, store)
    assert stale.is_stale() and stale.get_progress_timestamp() == checkpoint.progress_ts
    store.clear()
    hma_fetch(api, None, store)
    assert signals_in(store) == set(HASHES[2:6])


def test_an_opinion_reported_by_hma_reaches_the_exchange(exchange, owner, key_file, subscriber):
    publish(owner, HASHES[:1])
    collab = HashxCollabConfig(name="acme", url=exchange, sets=["acme-csam"])
    api = HashxSignalExchangeAPI.for_collab(collab, HashxCredentials(key_file.read_text()))
    api.report_opinion(
        PdqSignal, HASHES[0], SignalOpinion(True, SignalOpinionCategory.NEGATIVE_CLASS, {"meme"})
    )
    opinion = Opinion.objects.get(organisation=subscriber.org)
    assert (opinion.category, opinion.tags) == ("negative", ["meme"])

    with pytest.raises(ValueError, match="no set of acme holds pdq"):
        api.report_opinion(
            PdqSignal, HASHES[1], SignalOpinion(True, SignalOpinionCategory.NEGATIVE_CLASS, set())
        )


def test_a_checkpoint_goes_stale_after_tombstone_retention():
    now = int(timezone.now().timestamp())
    checkpoint = HashxCheckpoint("cursor", now, now)
    with time_machine.travel(timezone.now() + timedelta(days=89)):
        assert not checkpoint.is_stale()
    with time_machine.travel(timezone.now() + timedelta(days=91)):
        assert checkpoint.is_stale()
    assert HashxCheckpoint("cursor", now, now, expired=True).is_stale()


def test_a_signal_in_two_sets_stays_until_both_retract_it(exchange, owner, publisher, tx):
    do_create_set(
        publisher.org, {"slug": "acme-ncii", "name": "Acme NCII", "distribution": "coalition"}
    )
    publish(owner, HASHES[:2])
    publish(owner, HASHES[:1], slug="acme-ncii")
    md5 = "9e107d9d372bb6826bd81d3542a419d6"
    batch = owner.publish("acme-ncii", [{"type": "md5", "value": md5}])["batch"]
    assert owner.wait_for_batch(batch, poll=0.2)["state"] == "done"
    set_up_collab(tx, exchange)
    # The CLI asks for every required setting again on an edit.
    both = ("--url", exchange, "--sets", "acme-csam,acme-ncii")
    tx("config", "collab", "edit", "hashx", "acme", *both)
    tx("fetch")
    assert "(acme)" in matches(tx, HASHES[0])
    assert "(acme)" in tx("match", "-S", "video_md5", "-H", "video", "--", md5).stdout

    owner.retract("acme-csam", [{"type": "pdq", "value": HASHES[0]}])
    tx("fetch")
    assert "(acme)" in matches(tx, HASHES[0])
    owner.retract("acme-ncii", [{"type": "pdq", "value": HASHES[0]}])
    tx("fetch")
    assert matches(tx, HASHES[0]).strip() == ""

    # Narrowed to PDQ, the collab no longer offers the MD5. (The CLI keeps a type's old index
    # file when no signal of the type is left, so ask `dataset` rather than `match`.)
    printed = ("dataset", "-P", "--print-signals-only", "-s", "video_md5")
    assert tx(*printed).stdout.split() == [md5]
    tx("config", "collab", "edit", "hashx", "acme", *both, "--signal-types", "pdq")
    tx("fetch")
    assert tx(*printed).stdout.strip() == ""


def test_a_collab_whose_sets_changed_starts_again(exchange, owner, key_file):
    publish(owner, HASHES[:2])
    collab = HashxCollabConfig(name="acme", url=exchange, sets=["acme-csam"])
    api = HashxSignalExchangeAPI.for_collab(collab, HashxCredentials(str(key_file)))
    checkpoint = hma_fetch(api, None, {})
    collab.sets = ["acme-csam", "other"]
    assert hma_fetch(api, checkpoint, {}).is_stale()


def test_every_dataclass_survives_pickle_and_json():
    values = [
        HashxCollabConfig(name="acme", url="https://x", sets=["a", "b"], signal_types=["pdq"]),
        HashxCheckpoint("c", 1, 2, False, ["a", "b"], ["a"], "s"),
        HashxSignalMetadata(7, ["a"], "pdq", HASHES[0], ["csam"], 2, 1, 1, 0, 3),
        HashxCredentials("/keys/acme.pem"),
    ]
    for value in values:
        assert pickle.loads(pickle.dumps(value)) == value  # noqa: S301
        as_json = dataclass_json.dataclass_dumps(value)
        assert dataclass_json.dataclass_loads(as_json, type(value)) == value
    # Contributions and a member's negative opinion: a match reads as disputed.
    assert str(values[2]) == "DISPUTED csam"
