"""Peering with another exchange over HTTP (this test's live server stands in for it), the
pulls that fail and back off, and what staff see and do in admin."""

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from exchange.actions.identity import get_identity
from federation.actions.apply import do_apply_page
from federation.actions.peering import check_fingerprint, own_fingerprint
from federation.actions.pull import do_pull_peer
from federation.models import Peer
from federation.tasks import pull_due
from members.models import Organisation
from signals.models import SetEntry
from tests.federation.conftest import OTHER, change, md5s
from tests.helpers import eventually

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
