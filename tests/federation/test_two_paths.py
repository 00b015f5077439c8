"""The same origin set reached through two peers: one mirror here, each value one entry, active
while at least one peer serves it; a tombstone, a withdrawal or a resync through one path
leaves what the other still serves; and what a peer serves here goes back to it only as a
tombstone."""

import pytest
from django.urls import reverse

from federation.actions.apply import Resync, do_apply_page, do_withdraw_mirror
from federation.actions.pull import ensure_mirror
from federation.models import MirroredSet, Peer
from signals.models import SetEntry
from tests.conftest import make_member
from tests.federation.conftest import OTHER, THIRD, change, md5s

pytestmark = pytest.mark.django_db

ORIGIN = "hx-00000000-0000-4000-8000-00000000000d"


@pytest.fixture
def hotline(db):
    """A second peer exchange (``THIRD``), which also mirrors the origin's set."""
    member = make_member("hotline-exchange", kind="peer")
    member.org.exchange_id = THIRD
    member.org.save(update_fields=["exchange_id"])
    link = Peer.objects.create(
        name="hotline", url="http://127.0.0.1:8", exchange_id=THIRD, organisation=member.org,
        key_id=member.key.key_id, public_key=bytes(member.key.public_key),
    )  # fmt: skip
    return member, link


@pytest.fixture
def paths(peer_link, hotline):
    """The origin's ``csam`` set as eu serves it (naming its root) and as the hotline does (an
    older exchange: its origin's slug is the root, one hop away)."""
    via_eu = ensure_mirror(
        peer_link, {"slug": "origin--csam", "name": "CSAM", "tlp": "green",
                    "distribution": "federated",
                    "origin": {"exchange": ORIGIN, "set": "csam", "path": [ORIGIN],
                               "root_set": "csam"}},
        [ORIGIN, OTHER],
    )  # fmt: skip
    via_hotline = ensure_mirror(
        hotline[1], {"slug": "csam-from-origin", "name": "CSAM", "tlp": "green",
                     "distribution": "federated",
                     "origin": {"exchange": ORIGIN, "set": "csam", "path": [ORIGIN]}},
        [ORIGIN, THIRD],
    )  # fmt: skip
    return via_eu, via_hotline


def _page(mirror: MirroredSet, values: list[str], *, state: str = "active") -> None:
    peer = mirror.peer.exchange_id
    changes = [
        change(v, path=[ORIGIN, peer], hops=2, state=state,
               origin={"exchange": ORIGIN, "set": "csam", "entry": 7,
                       "first_seen": "2026-01-02T03:04:05Z"})
        for v in values
    ]  # fmt: skip
    do_apply_page(mirror, changes, "c", peer_exchange=peer, own_exchange="hx-own")


def _states() -> dict[str, tuple[str, list[str]]]:
    return {v: (s, sorted(via)) for v, s, via in
            SetEntry.objects.values_list("value", "state", "via")}  # fmt: skip


def test_the_same_origin_set_through_two_peers_is_one_mirror_and_one_entry_per_value(paths):
    via_eu, via_hotline = paths
    (value,) = md5s(1)

    _page(via_eu, [value])
    _page(via_hotline, [value])

    assert via_eu.hash_set_id == via_hotline.hash_set_id
    assert _states() == {value: ("active", [OTHER, THIRD])}
    entry = SetEntry.objects.get()
    assert (entry.origin_set, entry.origin_entry, entry.path) == ("csam", 7, [ORIGIN, OTHER])


def test_a_tombstone_through_one_path_leaves_what_the_other_still_serves(paths):
    via_eu, via_hotline = paths
    both, eu_only = md5s(2)
    _page(via_eu, [both, eu_only])
    _page(via_hotline, [both])

    _page(via_eu, [both, eu_only], state="tombstone")

    assert _states() == {both: ("active", [THIRD]), eu_only: ("tombstone", [])}
    _page(via_hotline, [both], state="tombstone")
    assert _states()[both] == ("tombstone", [])


def test_a_path_withdrawn_or_resynced_keeps_what_the_other_path_serves(paths):
    via_eu, via_hotline = paths
    both, eu_only, kept = md5s(3)
    _page(via_eu, [both, eu_only, kept])
    _page(via_hotline, [both])

    with Resync(via_eu, peer_exchange=OTHER, own_exchange="hx-own") as resync:
        resync.add([change(kept, path=[ORIGIN, OTHER], hops=2,
                           origin={"exchange": ORIGIN, "set": "csam", "entry": 8,
                                   "first_seen": "2026-01-02T03:04:05Z"})])  # fmt: skip
        assert resync.finish("snap").tombstoned == 1

    assert _states() == {both: ("active", [THIRD]), eu_only: ("tombstone", []),
                         kept: ("active", [OTHER])}  # fmt: skip
    assert do_withdraw_mirror(via_hotline, "no longer listed by the peer") == 1
    assert _states()[both] == ("tombstone", [])
    assert _states()[kept] == ("active", [OTHER])


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_what_a_peer_serves_here_goes_back_to_it_only_as_a_tombstone(paths, hotline):
    via_eu, via_hotline = paths
    both, eu_only = md5s(2)
    _page(via_eu, [both, eu_only])
    _page(via_hotline, [both])
    slug = via_eu.hash_set.slug

    answer = hotline[0].api.get(f"/api/v1/changes?sets={slug}")

    assert answer.status_code == 200, answer.content
    served = {c["value"]: c["state"] for c in answer.json()["changes"]}
    assert served == {both: "tombstone", eu_only: "active"}
    snapshot = hotline[0].api.get(f"/api/v1/sets/{slug}/snapshot")
    lines = b"".join(snapshot.streaming_content).decode().splitlines()[:-1]
    assert len(lines) == 1 and eu_only in lines[0]


@pytest.mark.django_db(transaction=True)
def test_an_opinion_on_a_mirror_of_two_paths_is_forwarded_along_one(paths, subscriber):
    from tests.federation.test_opinion_forwarding import PeerStandIn, _opinion

    via_eu, via_hotline = paths
    (value,) = md5s(1)
    _page(via_eu, [value])
    _page(via_hotline, [value])
    _opinion(via_eu.hash_set, subscriber, value, "negative")
    eu, hotline = PeerStandIn(), PeerStandIn()

    assert (eu.forward(via_eu.peer), hotline.forward(via_hotline.peer)) == (1, 0)
    assert eu.sent == [("/api/v1/sets/origin--csam/opinions", value, "negative")]


def test_staff_see_for_each_peer_the_entries_it_serves(staff, paths):
    via_eu, via_hotline = paths
    both, eu_only = md5s(2)
    _page(via_eu, [both, eu_only])
    _page(via_hotline, [both])

    listing = staff.get(reverse("admin:federation_peer_changelist"))

    assert {p.name: p.mirrored for p in listing.context["cl"].result_list} == {
        "eu": 2, "hotline": 1}  # fmt: skip
