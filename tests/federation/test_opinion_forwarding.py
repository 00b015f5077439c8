"""Opinions on mirrored entries forwarded to the peer in opinion-position order: one written by
a transaction that commits late is still forwarded (a time watermark would pass it for ever)."""

import threading
from types import SimpleNamespace

import pytest
from django.db import connection, transaction

from federation.actions.apply import do_apply_page
from federation.actions.opinions import do_forward_opinions
from federation.actions.pull import ensure_mirror
from federation.models import Peer
from signals.actions.opinions import do_give_opinions
from tests.federation.conftest import OTHER, change, md5s

pytestmark = pytest.mark.django_db(transaction=True)


class PeerStandIn:
    """The peer's opinions endpoint: accepts everything, remembers what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def post(self, path: str, body: dict) -> SimpleNamespace:
        self.sent += [(path, s["value"], s["category"]) for s in body["signals"]]
        return SimpleNamespace(status_code=200)

    def forward(self, peer: Peer) -> int:
        peer.refresh_from_db()
        return do_forward_opinions(peer, self.post, lambda answer, what: AssertionError(what))


def _mirror_with(peer_link: Peer, slug: str, own_id: str) -> tuple[object, str]:
    mirror = ensure_mirror(
        peer_link, {"slug": slug, "name": slug, "tlp": "green", "distribution": "federated"},
        [OTHER],
    )  # fmt: skip
    (value,) = md5s(1)
    do_apply_page(mirror, [change(value, path=[OTHER], set=slug)], "c1", peer_exchange=OTHER,
                  own_exchange=own_id)  # fmt: skip
    return mirror.hash_set, value


def _opinion(hash_set, member, value: str, category: str) -> None:
    item = {"type": "md5", "value": value, "category": category}
    assert do_give_opinions(hash_set, member.org, [item])["accepted"] == 1


def test_an_opinion_committed_after_a_later_one_was_forwarded_is_still_forwarded(
    peer_link, subscriber, outsider, own_id
):
    first_set, early = _mirror_with(peer_link, "first", own_id)
    second_set, late = _mirror_with(peer_link, "second", own_id)
    standin = PeerStandIn()
    written, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        # Its transaction starts (and stamps updated_at) before the other opinion's, and
        # commits after that one has been forwarded.
        try:
            with transaction.atomic():
                _opinion(first_set, outsider, early, "negative")
                written.set()
                assert release.wait(30)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert written.wait(30)
    _opinion(second_set, subscriber, late, "positive")

    # The open transaction holds the horizon back: nothing past it is forwarded yet.
    during = standin.forward(peer_link)
    release.set()
    writer.join()
    after = standin.forward(peer_link)

    assert (during, after) == (0, 2)
    assert standin.sent == [
        ("/api/v1/sets/first/opinions", early, "negative"),
        ("/api/v1/sets/second/opinions", late, "positive"),
    ]
    assert standin.forward(peer_link) == 0


def test_a_changed_opinion_is_forwarded_again_and_the_peer_own_never(
    peer, peer_link, subscriber, own_id
):
    hash_set, value = _mirror_with(peer_link, "first", own_id)
    standin = PeerStandIn()
    _opinion(hash_set, subscriber, value, "positive")
    _opinion(hash_set, peer, value, "negative")  # the peer's own: it has it
    standin.forward(peer_link)

    retagged = {"type": "md5", "value": value, "category": "positive", "tags": ["csam"]}
    do_give_opinions(hash_set, subscriber.org, [retagged])
    standin.forward(peer_link)

    assert standin.sent == [("/api/v1/sets/first/opinions", value, "positive")] * 2
