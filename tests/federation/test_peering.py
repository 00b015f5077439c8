"""Peering with another exchange over HTTP (this test's live server stands in for it), the
pulls that fail and back off, and what staff see and do in admin."""

import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEvent
from exchange.actions.identity import get_identity
from exchange.metrics import exposition
from federation.actions import pull
from federation.actions.apply import do_apply_page
from federation.actions.peering import check_fingerprint, own_fingerprint
from federation.actions.pull import MAX_PAGE, do_pull_peer
from federation.models import MirroredSet, Peer
from federation.tasks import pull_due
from hashx.keys import public_jwk
from members.models import Organisation
from signals.models import SetEntry
from tests.federation.conftest import OTHER, change, md5s
from tests.helpers import eventually
from tests.receiver import Answer, Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_exchange(exchange_url: str, loopback_allowed: None) -> str:
    """The live server, standing in for another exchange (its /.well-known/hashx is this test
    database's identity: the three-exchange test peers real separate ones)."""
    get_identity()
    return exchange_url


def test_the_fingerprint_is_the_current_key_thumbprint():
    fingerprint = own_fingerprint()
    assert check_fingerprint(fingerprint) == fingerprint.removeprefix("SHA256:")
    out = []
    call_command("peer_fingerprint", stdout=_Lines(out), stderr=_Lines([]))
    assert out == [fingerprint]


class _Lines:
    def __init__(self, into: list[str]) -> None:
        self.into = into

    def write(self, text: str) -> None:
        self.into.extend(line for line in text.splitlines() if line)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("bad", ["", "SHA256:short", "MD5:" + "a" * 43, "a" * 43])
def test_a_malformed_fingerprint_is_refused(bad):
    with pytest.raises(CommandError, match="fingerprint"):
        call_command("add_peer", "eu", "http://127.0.0.1:9", "--fingerprint", bad)


@pytest.mark.django_db(transaction=True)
def test_add_peer_refuses_a_key_that_does_not_match_and_creates_nothing(other_exchange):
    wrong = "SHA256:" + "A" * 43

    with pytest.raises(CommandError, match="fingerprint mismatch"):
        call_command("add_peer", "eu", other_exchange, "--fingerprint", wrong)

    assert not Peer.objects.exists()
    assert not Organisation.objects.filter(kind="peer").exists()


@pytest.mark.django_db(transaction=True)
def test_add_peer_refuses_to_peer_with_this_exchange_itself(other_exchange):
    with pytest.raises(CommandError, match="this exchange itself"):
        call_command("add_peer", "eu", other_exchange, "--fingerprint", own_fingerprint())
    assert not Peer.objects.exists()


def test_a_peer_that_is_down_backs_off_and_does_not_stop_the_others(peer_link, settings):
    settings.HASHX_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.HASHX_WEBHOOK_ALLOW_HTTP = True
    second = Peer.objects.create(
        name="second", url="http://127.0.0.1:9", exchange_id="hx-second",
        organisation=Organisation.objects.create(slug="second", name="Second", kind="peer"),
        key_id="k", public_key=bytes(32),
    )  # fmt: skip

    with pytest.raises(CommandError, match="pulls failed: eu, second"):
        call_command("pull_peers", stdout=_Lines([]), stderr=_Lines([]))

    for link in (peer_link, second):
        link.refresh_from_db()
        assert link.state == "active" and link.failures == 1
        assert "cannot be reached" in link.last_error
        assert link.next_attempt_at > timezone.now()
    # Not due yet: the beat's pull leaves it alone until its back-off has passed.
    assert do_pull_peer(peer_link.pk).skipped == "not due"
    assert AuditEvent.objects.filter(action="federation.pull_failed").count() == 2


def test_staff_see_peers_and_pause_resume_and_remove_them(staff, peer_link, mirror):
    do_apply_page(mirror, [change(v, path=[OTHER]) for v in md5s(2)], "c1",
                  peer_exchange=OTHER, own_exchange=get_identity().exchange_id)  # fmt: skip
    listing = staff.get(reverse("admin:federation_peer_changelist"))
    assert listing.status_code == 200
    assert [p.mirrored for p in listing.context["cl"].result_list] == [2]
    page = staff.get(reverse("admin:federation_peer_change", args=[peer_link.pk]))
    assert page.status_code == 200 and b"their-set" in page.content
    url = reverse("admin:federation_peer_changelist")
    for action, state in (("pause", "paused"), ("resume", "active")):
        staff.post(url, {"action": action, "_selected_action": [peer_link.pk],
                         "confirm": "yes", "reason": "maintenance"})  # fmt: skip
        peer_link.refresh_from_db()
        assert peer_link.state == state
    assert AuditEvent.objects.filter(action__startswith="federation.peer.").count() == 2

    staff.post(url, {"action": "remove_dropping_mirrors", "_selected_action": [peer_link.pk],
                     "confirm": "yes", "reason": "peering ended"})  # fmt: skip

    assert not Peer.objects.exists()
    assert set(SetEntry.objects.values_list("state", flat=True)) == {"tombstone"}
    peer_link.organisation.refresh_from_db()
    assert peer_link.organisation.status == "suspended"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_beat_pulls_each_due_peer_on_the_federation_queue(peer_link, celery_worker, settings):
    pull_due()  # what beat runs every HASHX_FEDERATION_PULL_SECONDS

    def attempted() -> bool:
        peer_link.refresh_from_db()
        return peer_link.failures == 1

    eventually(attempted, timeout=60, what="the worker's pull of the due peer")
    # The worker's settings are the defaults: outbound calls go to public https only.
    assert peer_link.last_error == "http://127.0.0.1:9: the URL must use https"


@pytest.mark.django_db(transaction=True)
def test_staff_add_a_peer_in_admin_and_a_mismatch_says_why(staff, other_exchange):
    url = reverse("admin:federation_peer_add")
    assert staff.get(url).status_code == 200

    answer = staff.post(url, {"name": "eu", "url": other_exchange,
                              "fingerprint": "SHA256:" + "A" * 43})  # fmt: skip

    assert answer.status_code == 200 and b"fingerprint mismatch" in answer.content
    assert not Peer.objects.exists()


def _identity(peer_member) -> bytes:
    jwk = public_jwk(bytes(peer_member.key.public_key))
    return json.dumps({"exchange_id": OTHER, "name": "EU", "jwks": {"keys": [jwk]}}).encode()


SETS = json.dumps({"next": None, "results": [
    {"slug": "their-set", "name": "Theirs", "tlp": "green", "distribution": "federated",
     "attribution": "named", "origin": None},
    {"slug": "secret", "name": "Secret", "tlp": "amber", "distribution": "federated",
     "origin": None},
]}).encode()  # fmt: skip


@pytest.fixture
def hostile_peer(peer, peer_link, loopback_allowed):
    """The peer's exchange, played by a scripted HTTP server."""
    with Receiver() as receiver:
        Peer.objects.filter(pk=peer_link.pk).update(url=receiver.base_url)
        yield receiver


def test_a_peer_sending_malformed_oversized_and_forbidden_entries_gets_only_the_rest_applied(
    peer, peer_link, hostile_peer, own_id
):
    good = md5s(3)
    lines = [
        json.dumps(change(good[0], path=[OTHER])),
        json.dumps(change(md5s(1)[0], path=[OTHER], labels=["x" * 90] * 20)) + " " * (1 << 20),
        "not json at all",
        json.dumps(change(md5s(1)[0], path=[own_id, OTHER])),
        json.dumps(change(good[1], path=[OTHER])),
        json.dumps({"cursor": "c1"}),
        json.dumps(change(good[2], path=[OTHER])),
        json.dumps({"cursor": "c2", "end": True}),
    ]
    hostile_peer.script = [
        Answer(body=_identity(peer)),
        Answer(body=SETS),
        Answer(body="\n".join(lines).encode() + b"\n"),
    ]

    report = do_pull_peer(peer_link.pk, force=True)

    assert report.error == "" and report.refused_sets == {
        "secret": "TLP 'amber' may not leave its exchange"}  # fmt: skip
    assert report.sets["their-set"]["applied"] == 3
    assert report.sets["their-set"]["refusals"] == {
        "line longer than 1 MiB": 1, "not JSON": 1, "path holds this exchange (an echo)": 1,
    }  # fmt: skip
    assert set(SetEntry.objects.values_list("value", flat=True)) == set(good)
    assert MirroredSet.objects.get().cursor == "c2"
    changes_request = hostile_peer.received[2]
    assert changes_request.path == "/api/v1/changes?sets=their-set"
    assert "signature-input" in changes_request.headers  # signed with this exchange's key


def test_a_feed_cut_short_keeps_the_pages_before_the_cut_and_says_so(peer, peer_link, hostile_peer):
    # The next page is read while this one is applied: what the reading side meets (here the
    # stream ending with no end line) still reaches the pull, after the pages before it.
    first, second, cut = md5s(2), md5s(2), md5s(1)
    lines = [
        *(json.dumps(change(v, path=[OTHER])) for v in first), json.dumps({"cursor": "c1"}),
        *(json.dumps(change(v, path=[OTHER])) for v in second), json.dumps({"cursor": "c2"}),
        *(json.dumps(change(v, path=[OTHER])) for v in cut),
    ]  # fmt: skip
    hostile_peer.script = [
        Answer(body=_identity(peer)), Answer(body=SETS),
        Answer(body="\n".join(lines).encode() + b"\n"),
    ]  # fmt: skip

    report = do_pull_peer(peer_link.pk, force=True)

    assert report.error == "their-set: the feed stream ended before its end line"
    assert set(SetEntry.objects.values_list("value", flat=True)) == {*first, *second}
    assert MirroredSet.objects.get().cursor == "c2"
    peer_link.refresh_from_db()
    assert (peer_link.state, peer_link.failures) == ("active", 1)


def test_a_feed_with_no_checkpoint_for_too_long_is_refused_before_it_fills_memory(
    peer, peer_link, hostile_peer
):
    line = json.dumps(change(md5s(1)[0], path=[OTHER])).encode() + b"\n"
    hostile_peer.script = [
        Answer(body=_identity(peer)), Answer(body=SETS), Answer(body=line * (MAX_PAGE + 1)),
    ]  # fmt: skip

    report = do_pull_peer(peer_link.pk, force=True)

    assert report.error == f"their-set: no checkpoint in {MAX_PAGE} changes"
    assert not SetEntry.objects.exists()
    assert MirroredSet.objects.get().cursor == ""


def test_a_feed_with_no_checkpoint_for_too_many_bytes_is_refused(
    peer, peer_link, hostile_peer, monkeypatch
):
    # Scaled down: the exchange checkpoints every 8 MiB of values; a peer that never does is
    # refused before its page fills memory, however few changes that is.
    monkeypatch.setattr(pull, "MAX_PAGE_BYTES", 16 << 10)
    lines = b"".join(
        json.dumps(change(v, path=[OTHER], labels=["x" * 100] * 10)).encode() + b"\n"
        for v in md5s(30)
    )
    hostile_peer.script = [Answer(body=_identity(peer)), Answer(body=SETS), Answer(body=lines)]

    report = do_pull_peer(peer_link.pk, force=True)

    assert report.error == "their-set: no checkpoint in 16,384 bytes"
    assert not SetEntry.objects.exists()


def test_a_peer_answering_503_backs_off_and_stays_active(peer, peer_link, hostile_peer):
    hostile_peer.script = [Answer(body=_identity(peer)), Answer(status=503, body=b"busy")]

    report = do_pull_peer(peer_link.pk, force=True)

    peer_link.refresh_from_db()
    assert report.error.startswith("GET /api/v1/sets answered 503")
    assert (peer_link.state, peer_link.failures) == ("active", 1)
    assert peer_link.next_attempt_at > timezone.now()


# The push-assist subscription the first pull asks the peer for.
PUSH = Answer(status=201, body=b'{"id": "push-1"}')


def test_a_set_the_peer_stops_serving_has_its_mirror_tombstoned_and_read_afresh_if_it_returns(
    peer, peer_link, hostile_peer
):
    values = md5s(2)
    feed = "\n".join([*(json.dumps(change(v, path=[OTHER])) for v in values),
                      json.dumps({"cursor": "c1", "end": True})]).encode() + b"\n"  # fmt: skip
    unlisted = json.dumps({"next": None, "results": []}).encode()
    hostile_peer.script = [Answer(body=_identity(peer)), Answer(body=SETS), Answer(body=feed),
                           PUSH, Answer(body=_identity(peer)), Answer(body=unlisted),
                           Answer(body=_identity(peer)), Answer(body=unlisted)]  # fmt: skip
    do_pull_peer(peer_link.pk, force=True)

    report = do_pull_peer(peer_link.pk, force=True)
    again = do_pull_peer(peer_link.pk, force=True)

    assert report.error == "", report.error
    assert report.withdrawn == {"their-set": 2} and again.withdrawn == {}
    assert set(SetEntry.objects.values_list("state", flat=True)) == {"tombstone"}
    assert MirroredSet.objects.get().cursor == ""  # listed again, it is read from its start
    withdrawn = AuditEvent.objects.filter(action="federation.mirror.withdrawn")
    assert [e.details["reason"] for e in withdrawn] == ["no longer listed by the peer"]


def test_a_set_the_peer_serves_under_a_marking_that_may_not_leave_is_withdrawn(
    peer, peer_link, hostile_peer
):
    feed = "\n".join([json.dumps(change(md5s(1)[0], path=[OTHER])),
                      json.dumps({"cursor": "c1", "end": True})]).encode() + b"\n"  # fmt: skip
    amber = SETS.replace(b'"tlp": "green"', b'"tlp": "amber"')
    hostile_peer.script = [Answer(body=_identity(peer)), Answer(body=SETS), Answer(body=feed),
                           PUSH, Answer(body=_identity(peer)), Answer(body=amber)]  # fmt: skip
    do_pull_peer(peer_link.pk, force=True)

    report = do_pull_peer(peer_link.pk, force=True)

    assert report.withdrawn == {"their-set": 1}
    assert not SetEntry.objects.filter(state="active").exists()


def test_peers_lag_and_last_error_are_scraped_and_shown_on_the_dashboard(
    staff, peer, peer_link, hostile_peer
):
    feed = "\n".join([json.dumps(change(md5s(1)[0], path=[OTHER])),
                      json.dumps({"cursor": "c1", "end": True})]).encode() + b"\n"  # fmt: skip
    hostile_peer.script = [Answer(body=_identity(peer)), Answer(body=SETS), Answer(body=feed),
                           PUSH, Answer(body=_identity(peer)),
                           Answer(status=503, body=b"busy")]  # fmt: skip
    do_pull_peer(peer_link.pk, force=True)
    peer_link.refresh_from_db()
    pulled_at = peer_link.last_success_at

    with time_machine.travel(pulled_at + timedelta(seconds=90), tick=False):
        failed = do_pull_peer(peer_link.pk, force=True)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition().decode())
            for s in family.samples
        }
        page = staff.get("/admin/ops/").content.decode()

    assert failed.error.startswith("GET /api/v1/sets answered 503")
    lag = ("hashx_federation_peer_lag_seconds", (("peer", "eu"), ("state", "active")))
    assert samples[lag] == 90
    assert samples[("hashx_federation_peer_failures", (("peer", "eu"),))] == 1
    applied = ("hashx_federation_mirror_changes_applied", (("peer", "eu"), ("set", "their-set")))
    assert samples[applied] == 1
    (row,) = re.findall(r'<tr class="peer">(.*?)</tr>', page)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[:3] == ["eu", "active", "90"] and cells[4:6] == ["1", "1"]
    assert cells[6].startswith("GET /api/v1/sets answered 503")
    assert "their-set &rarr; eu--their-set" in page and "position c1" in page
    assert re.search(r'<rect class="segment" data-series="lag" data-value="90"', page)
