"""The hashx python-threatexchange extension against a live exchange: the real `threatexchange`
CLI (its state under a temporary HOME) and the adapter driven the way HMA drives it."""

import hashlib
import json
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
from threatexchange.extensions.vpdq.vpdq import VPDQSignal
from threatexchange.signal_type.md5 import VideoMD5Signal
from threatexchange.signal_type.pdq.signal import PdqSignal
from threatexchange.utils import dataclass_json

from audit.models import AuditEvent
from hashx.client import Client
from hashx.keys import private_key_to_pem
from hashx.threatexchange import (
    CHECKPOINT_VERSION,
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


def test_a_fetch_with_an_expired_checkpoint_ends_with_exactly_the_active_set(exchange, owner, tx):
    publish(owner, HASHES[:4])
    set_up_collab(tx, exchange)
    tx("fetch")
    # While the fetcher is away, two signals are retracted and their tombstones purged, so the
    # feed cannot tell it about them (410), and another signal arrives.
    owner.retract("acme-csam", [{"type": "pdq", "value": v} for v in HASHES[:2]])
    publish(owner, HASHES[4:5])
    assert do_purge_tombstones(now=timezone.now() + timedelta(days=91)) == 2

    tx("fetch")
    state = stored_state(tx)
    assert {record.value for record in state.updates.values()} == set(HASHES[2:5])
    assert state.checkpoint.cursor and not state.checkpoint.is_stale()
    assert matches(tx, HASHES[0]).strip() == "" and matches(tx, HASHES[1]).strip() == ""
    assert "(acme)" in matches(tx, HASHES[4])


def test_an_opinion_given_with_the_cli_reaches_the_exchange(exchange, owner, tx, subscriber):
    publish(owner, HASHES[:1])
    set_up_collab(tx, exchange)
    tx("label", "-H", "pdq", "-l", "seen-elsewhere", "acme", "photo", "--", HASHES[0])

    opinion = Opinion.objects.get(organisation=subscriber.org)
    assert (opinion.category, opinion.tags) == ("positive", ["seen-elsewhere"])
    assert SetEntry.objects.get(value=HASHES[0]).positive_count == 1


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


class HmaStore:
    """What HMA keeps of one exchange: records by key (pickled) and the checkpoint as JSON."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.checkpoint_json: dict | None = None

    def checkpoint(self) -> HashxCheckpoint | None:
        if self.checkpoint_json is None:
            return None
        return dataclass_json.dataclass_load_dict(self.checkpoint_json, HashxCheckpoint)

    def signals(self) -> set[str]:
        return {pickle.loads(blob).value for blob in self.records.values()}  # noqa: S301


def hma_fetch(api, store, max_deltas=None):
    """One run of HMA's fetcher (OpenMediaMatch.background_tasks.fetcher._fetch) and its
    storage's exchange_commit_fetch, as they treat an API: a stale checkpoint makes it fetch
    from scratch *without clearing what it holds*; deltas are merged with dict.update; the run
    stops after a time limit (here after ``max_deltas``) and commits what it has: a None, or
    a record none of its signal types can use, deletes the key, others are stored pickled, and
    the checkpoint is stored as JSON once the stored one is found equal to the one the run
    started from."""
    starting = store.checkpoint()
    checkpoint = None if starting is None or starting.is_stale() else starting
    pending = None
    for count, delta in enumerate(api.fetch_iter([PdqSignal, VideoMD5Signal], checkpoint), 1):
        if checkpoint is not None and checkpoint.get_progress_timestamp() is not None:
            assert checkpoint.get_progress_timestamp() <= delta.checkpoint.get_progress_timestamp()
        checkpoint = delta.checkpoint
        if pending is None:
            pending = delta
        else:
            pending.updates.update(delta.updates)
            pending.checkpoint = delta.checkpoint
        if count == max_deltas:
            break
    assert pending is not None
    assert store.checkpoint() == starting, "checkpoint changed since the fetch started"
    for key, value in pending.updates.items():
        usable = value is not None and HashxSignalExchangeAPI.naive_convert_to_signal_type(
            [PdqSignal, VideoMD5Signal], api.collab, {key: value}
        )
        if usable:
            as_json = dataclass_json.dataclass_dumps(value)  # HMA's other store keeps JSON
            assert dataclass_json.dataclass_loads(as_json, HashxSignalMetadata) == value
            store.records[str(key)] = pickle.dumps(value)
        else:
            store.records.pop(str(key), None)
    store.checkpoint_json = json.loads(
        json.dumps(dataclass_json.dataclass_dump_dict(pending.checkpoint))
    )


@pytest.fixture
def hma_api(exchange, key_file):
    """The API as HMA builds it: the collab as its curation API creates it (POST /c/exchanges)
    and the credentials as it stores them (POST /c/exchanges/api/hashx), JSON loaded into the
    dataclasses and kept as JSON, the credentials handed over as the helper's default."""
    api_json = {"url": exchange, "sets": ["acme-csam"], "page_size": 2}
    api_json.update(name="HASHX_ACME", enabled=True, api="hashx")
    collab = dataclass_json.dataclass_load_dict(api_json, HashxCollabConfig)
    collab = dataclass_json.dataclass_loads(
        dataclass_json.dataclass_dumps(collab), HashxCollabConfig
    )
    creds = dataclass_json.dataclass_load_dict({"key": key_file.read_text()}, HashxCredentials)
    creds = dataclass_json.dataclass_loads(dataclass_json.dataclass_dumps(creds), HashxCredentials)
    with HashxCredentials.set_default(creds, "db"):
        return HashxSignalExchangeAPI.for_collab(collab)


def test_hma_fetches_in_pages_and_ends_with_the_active_set_after_a_410(exchange, owner, hma_api):
    publish(owner, HASHES[:5])
    store = HmaStore()
    hma_fetch(hma_api, store)
    assert store.signals() == set(HASHES[:5])
    checkpoint = store.checkpoint()
    assert pickle.loads(pickle.dumps(checkpoint)) == checkpoint  # noqa: S301
    assert not checkpoint.is_stale()

    owner.retract("acme-csam", [{"type": "pdq", "value": HASHES[0]}])
    publish(owner, HASHES[5:6])
    hma_fetch(hma_api, store)
    assert store.signals() == set(HASHES[1:6])
    assert store.checkpoint().progress_ts >= checkpoint.progress_ts

    # Tombstones purged past the cursor: the exchange answers 410, and the same run resyncs
    # and deletes what HMA holds and the exchange no longer has.
    owner.retract("acme-csam", [{"type": "pdq", "value": HASHES[1]}])
    assert do_purge_tombstones(now=timezone.now() + timedelta(days=91)) == 2
    hma_fetch(hma_api, store)
    assert store.signals() == set(HASHES[2:6])
    assert len(store.records) == 4


def test_an_interrupted_resync_goes_on_where_it_stopped(exchange, owner, hma_api):
    publish(owner, HASHES[:6])
    store = HmaStore()
    hma_fetch(hma_api, store)
    owner.retract("acme-csam", [{"type": "pdq", "value": v} for v in HASHES[:3]])
    assert do_purge_tombstones(now=timezone.now() + timedelta(days=91)) == 3
    publish(owner, HASHES[6:8])

    # HMA's time limit, as four deltas a run. The first run meets the 410 and reads the
    # snapshot (three pages of two) and a first page of deletions; the second goes on with the
    # deletions, then follows the feed. (A set's snapshot has to fit in a run: an interrupted
    # one is read again from its start.)
    hma_fetch(hma_api, store, max_deltas=4)
    assert not store.checkpoint().cursor and len(store.records) == 6
    hma_fetch(hma_api, store, max_deltas=4)
    assert store.checkpoint().cursor
    assert store.signals() == set(HASHES[3:8]) and len(store.records) == 5
    hma_fetch(hma_api, store)
    assert store.signals() == set(HASHES[3:8]) and len(store.records) == 5


def test_an_opinion_reported_by_hma_reaches_the_exchange(exchange, owner, key_file, subscriber):
    publish(owner, HASHES[:1])
    collab = HashxCollabConfig(name="acme", url=exchange, sets=["acme-csam"])
    api = HashxSignalExchangeAPI.for_collab(collab, HashxCredentials(key_file.read_text()))
    api.report_opinion(
        PdqSignal, HASHES[0], SignalOpinion(True, SignalOpinionCategory.NEGATIVE_CLASS, {"meme"})
    )
    opinion = Opinion.objects.get(organisation=subscriber.org)
    assert (opinion.category, opinion.tags) == ("negative", ["meme"])

    with pytest.raises(ValueError, match="acme: no set of acme-csam holds pdq"):
        api.report_opinion(
            PdqSignal, HASHES[1], SignalOpinion(True, SignalOpinionCategory.NEGATIVE_CLASS, set())
        )


def test_only_a_checkpoint_of_an_older_extension_is_stale():
    # Older checkpoints did not record what the fetcher holds: the fetcher starts over.
    legacy = {"cursor": "c", "progress_ts": 5, "fresh_ts": 5, "expired": False, "sets": ["a"]}
    assert dataclass_json.dataclass_load_dict(legacy, HashxCheckpoint).is_stale()
    with time_machine.travel(timezone.now() + timedelta(days=3650)):
        assert not HashxCheckpoint("c", 5, version=CHECKPOINT_VERSION).is_stale()


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


def test_a_collab_whose_sets_changed_gets_them_on_the_next_fetch(exchange, owner, publisher, tx):
    do_create_set(
        publisher.org, {"slug": "acme-ncii", "name": "Acme NCII", "distribution": "coalition"}
    )
    publish(owner, HASHES[:2])
    publish(owner, HASHES[2:4], slug="acme-ncii")
    set_up_collab(tx, exchange)
    tx("fetch")
    assert "(acme)" in matches(tx, HASHES[0]) and matches(tx, HASHES[2]).strip() == ""

    tx("config", "collab", "edit", "hashx", "acme", "--url", exchange, "--sets", "acme-ncii")
    tx("fetch")
    assert {record.value for record in stored_state(tx).updates.values()} == set(HASHES[2:4])
    assert matches(tx, HASHES[0]).strip() == "" and "(acme)" in matches(tx, HASHES[2])


def test_every_dataclass_survives_pickle_and_json():
    values = [
        HashxCollabConfig(name="acme", url="https://x", sets=["a", "b"], signal_types=["pdq"]),
        HashxCheckpoint("c", 1, ["a", "b"], ["pdq"], {"0": "eJw="}, ["a"], "s", {}, 2),
        HashxSignalMetadata(7, ["a"], "pdq", HASHES[0], ["csam"], 2, 1, 1, 0, 3),
        HashxCredentials("/keys/acme.pem"),
    ]
    for value in values:
        assert pickle.loads(pickle.dumps(value)) == value  # noqa: S301
        as_json = dataclass_json.dataclass_dumps(value)
        assert dataclass_json.dataclass_loads(as_json, type(value)) == value
    # Contributions and a member's negative opinion: a match reads as disputed.
    assert str(values[2]) == "DISPUTED csam"


def test_labelling_a_signal_the_exchange_does_not_hold_says_so_in_one_line(
    exchange, owner, tx, tmp_path
):
    publish(owner, HASHES[:1])
    set_up_collab(tx, exchange)
    refused = tx("label", "-H", "pdq", "-l", "meme", "acme", "photo", "--", HASHES[1], check=False)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"acme: no set of acme-csam holds pdq {HASHES[1]}"
    )
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(private_key_to_pem(Ed25519PrivateKey.generate()))
    label = ("label", "-H", "pdq", "-l", "meme", "acme", "photo", "--", HASHES[0])
    unknown_key = tx(*label, check=False, key=stranger)
    assert unknown_key.returncode == 3 and "Traceback" not in unknown_key.stderr
    assert (
        unknown_key.stderr.strip().splitlines()[-1].startswith("acme: acme-csam: 401 Unknown key")
    )


def test_sha1_domain_and_url_signals_reach_the_cli(exchange, owner, tx, tmp_path, subscriber):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not really a photo")
    sha1 = hashlib.sha1(photo.read_bytes(), usedforsecurity=False).hexdigest()
    url = "https://files.abuse-host.net/a/b?c=1"
    signals = [
        {"type": "sha1", "value": sha1.upper()},
        {"type": "domain", "value": "Abuse-Host.NET."},
        {"type": "url", "value": url},
    ]
    batch = owner.publish("acme-csam", signals)["batch"]
    assert owner.wait_for_batch(batch, poll=0.2)["state"] == "done"
    set_up_collab(tx, exchange)
    tx("fetch")

    assert "sha1 - (acme)" in tx("match", "-S", "sha1", "photo", str(photo)).stdout
    assert "(acme)" in tx("match", "-S", "sha1", "-H", "photo", "--", sha1).stdout
    for host in ("https://abuse-host.net/x", "https://cdn.abuse-host.net/y", "abuse-host.net"):
        assert "(acme)" in tx("match", "-S", "domain", "url", "--", host).stdout
    assert tx("match", "-S", "domain", "url", "--", "https://abuse-host.org/").stdout == ""
    assert "(acme)" in tx("match", "-S", "url", "url", "--", url).stdout
    assert tx("match", "-S", "url", "url", "--", url + "&d=2").stdout == ""

    tx("label", "-H", "sha1", "-l", "seen", "acme", "photo", "--", sha1)
    opinion = Opinion.objects.get(organisation=subscriber.org)
    assert opinion.entry.value == sha1

    # Retracted, they leave as the others do.
    owner.retract("acme-csam", [{"type": s["type"], "value": s["value"]} for s in signals])
    tx("fetch")
    assert stored_state(tx).updates == {}


def test_a_vpdq_signal_reaches_the_cli_through_its_vpdq_extension(exchange, owner, tx):
    # python-threatexchange's vpdq extension imports Meta's vpdq package (the client's [video]
    # extra, a dev dependency built against ffmpeg's development libraries).

    [video] = VPDQSignal.get_examples()
    batch = owner.publish("acme-csam", [{"type": "vpdq", "value": video, "labels": ["csam"]}])
    assert owner.wait_for_batch(batch["batch"], poll=0.2)["state"] == "done"
    tx("config", "extensions", "add", "threatexchange.extensions.vpdq.manifest")
    set_up_collab(tx, exchange)
    tx("fetch")
    # The value fetched is the one published (the extension's own serialisation, unchanged),
    # handed to its vpdq signal type, whose index matches the video.
    [fetched] = stored_state(tx).updates.values()
    assert (fetched.type, fetched.value) == ("vpdq", video)
    assert "(acme)" in tx("match", "-S", "vpdq", "-H", "video", "--", video).stdout
