"""What may leave an exchange, checked on both sides: the serving side's access and feed rules,
and the pulling side's checks of every change it receives."""

import json

import pytest

from federation.actions.apply import Refusal, Resync, check_change, do_apply_page
from federation.actions.pull import ensure_mirror
from federation.models import Peer, ResyncSeen
from signals.models import HashSet, SetEntry
from tests.conftest import make_member
from tests.federation.conftest import OTHER, THIRD, change, md5s, publish
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db


def served(member, query=""):
    answer = member.api.get(f"/api/v1/changes{query}")
    assert answer.status_code == 200, answer.content
    return answer.json()["changes"]


def test_a_peer_lists_only_federated_clear_or_green_sets_and_not_its_own_mirrors(
    publisher, peer, federated, mirror
):
    for slug, tlp, distribution in [("amber", "amber", "coalition"), ("coal", "green",
                                    "coalition"), ("granted", "clear", "granted")]:  # fmt: skip
        answer = publisher.api.post(
            "/api/v1/sets",
            {"slug": slug, "name": slug, "tlp": tlp, "distribution": distribution},
        )
        assert answer.status_code == 201, answer.content
    publisher.api.request("PUT", f"/api/v1/sets/granted/grants/{peer.org.slug}", {"can_read": True})

    listed = peer.api.get("/api/v1/sets").json()["results"]

    assert [s["slug"] for s in listed] == ["fed"]
    assert listed[0]["origin"] is None and listed[0]["federation_hops"] == 2
    assert_problem(peer.api.get("/api/v1/sets/amber/snapshot"), 404, "not-found")
    assert_problem(peer.api.get(f"/api/v1/changes?sets={mirror.hash_set.slug}"), 404, "not-found")


@pytest.mark.parametrize("tlp", ["amber", "amber+strict", "red"])
def test_making_a_set_federated_under_a_restricted_marking_is_refused(publisher, tlp):
    create = {"slug": "s", "name": "S", "tlp": tlp, "distribution": "federated"}
    assert_problem(publisher.api.post("/api/v1/sets", create), 422, "not-federable")
    assert not HashSet.objects.exists()
    publisher.api.post("/api/v1/sets", {**create, "distribution": "coalition"})

    patched = publisher.api.request("PATCH", "/api/v1/sets/s", {"distribution": "federated"})

    assert_problem(patched, 422, "not-federable")
    assert HashSet.objects.get().distribution == "coalition"


def test_a_set_takes_one_to_three_hops(publisher):
    create = {"slug": "s", "name": "S", "tlp": "clear", "distribution": "federated"}
    for hops in (0, 4):
        answer = publisher.api.post("/api/v1/sets", {**create, "federation_hops": hops})
        assert_problem(answer, 400, "validation")


def test_a_mirror_is_read_only_and_lists_its_origin(subscriber, peer, mirror):
    slug = mirror.hash_set.slug
    listed = subscriber.api.get(f"/api/v1/sets/{slug}").json()
    assert listed["origin"] == {
        "exchange": OTHER,
        "set": "their-set",
        "url": "http://127.0.0.1:9",
        "path": [OTHER],
        "root_set": "their-set",
    }
    item = {"signals": [{"type": "md5", "value": md5s(1)[0]}]}
    for action in ("signals", "retractions"):
        answer = subscriber.api.post(f"/api/v1/sets/{slug}/{action}", item)
        assert "read-only here" in assert_problem(answer, 403, "forbidden")["detail"]
        # Its owner, the peer's organisation, does not even see it: it came from the peer.
        assert_problem(peer.api.post(f"/api/v1/sets/{slug}/{action}", item), 404, "not-found")


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_a_peer_is_served_hops_and_path_and_never_what_passed_through_it(
    publisher, peer, peer_link, federated, own_id
):
    local = md5s(2)
    publish(publisher, "fed", local)
    third = make_member("third-exchange", kind="peer")
    link = Peer.objects.create(
        name="third", url="http://127.0.0.1:9", exchange_id=THIRD, organisation=third.org,
        key_id=third.key.key_id, public_key=bytes(third.key.public_key),
    )  # fmt: skip
    theirs = ensure_mirror(link, {"slug": "s", "name": "S", "tlp": "clear",
                                  "distribution": "federated"}, [THIRD])  # fmt: skip
    # A mirror of a mirror of the peer's own set: its content passed through the peer.
    ensure_mirror(link, {"slug": "back", "name": "Back", "tlp": "clear",
                         "distribution": "federated"}, [OTHER, THIRD])  # fmt: skip
    assert {s["slug"] for s in peer.api.get("/api/v1/sets").json()["results"]} == {
        "fed", theirs.hash_set.slug}  # fmt: skip
    through_peer, onward, spent = md5s(3)
    do_apply_page(theirs, [
        change(through_peer, path=[OTHER, THIRD], hops=3),  # never served back to OTHER
        change(onward, path=[THIRD], hops=2),  # may travel one more hop
        change(spent, path=[THIRD], hops=1),  # stays here
    ], "c1", peer_exchange=THIRD, own_exchange=own_id)  # fmt: skip

    changes = {c["value"]: c for c in served(peer)}

    assert set(changes) == set(local) | {onward}
    assert changes[local[0]]["hops_left"] == 2 and changes[local[0]]["path"] == [own_id]
    assert changes[local[0]]["origin"] is None
    assert changes[onward]["hops_left"] == 1
    assert changes[onward]["path"] == [THIRD, own_id]
    assert changes[onward]["origin"]["exchange"] == THIRD
    # Members read every entry, whatever its hops and path.
    assert len(served(publisher, f"?sets=fed,{theirs.hash_set.slug}")) == 5
    snapshot = peer.api.get(f"/api/v1/sets/{theirs.hash_set.slug}/snapshot")
    lines = b"".join(snapshot.streaming_content).decode().splitlines()
    assert [json.loads(line)["value"] for line in lines[:-1]] == [onward]


def test_the_pulling_side_refuses_what_should_not_have_been_sent_and_applies_the_rest(
    mirror, own_id
):
    good, echo, spent, odd, wrong_peer = md5s(5)
    outcome = do_apply_page(mirror, [
        change(good, path=[THIRD, OTHER], hops=3, contributor_names=["acme"]),
        change(echo, path=[own_id, OTHER], hops=2),
        change(spent, path=[OTHER], hops=0),
        change(odd.upper(), path=[OTHER]),
        change(wrong_peer, path=[THIRD]),
        "malformed",
    ], "c1", peer_exchange=OTHER, own_exchange=own_id)  # fmt: skip

    assert (outcome.applied, outcome.new, outcome.refused) == (1, 1, 5)
    assert outcome.reasons == {
        "path holds this exchange (an echo)": 1, "no hops left": 1,
        "value not in canonical form": 1, "path does not end with the peer": 1,
        "not an object": 1,
    }  # fmt: skip
    entry = SetEntry.objects.get(hash_set=mirror.hash_set)
    assert (entry.value, entry.hops_left, entry.path) == (good, 2, [THIRD, OTHER])
    assert (entry.origin_set, entry.origin_entry) == ("their-set", 7)
    assert entry.contributor_names == [f"acme@{THIRD}"]
    mirror.refresh_from_db()
    assert (mirror.cursor, mirror.applied, mirror.refused) == ("c1", 1, 5)


@pytest.mark.parametrize(
    "broken",
    [{"path": "x"}, {"path": [OTHER, OTHER]}, {"hops_left": True}, {"contributors": -1},
     {"first_seen": "yesterday"}, {"labels": [1]}, {"origin": {"exchange": "elsewhere"}},
     {"state": "gone"}, {"type": "nope"}],
)  # fmt: skip
def test_each_malformed_change_is_refused(broken, own_id):
    with pytest.raises(Refusal):
        check_change({**change(md5s(1)[0], path=[OTHER]), **broken},
                     peer_exchange=OTHER, own_exchange=own_id)  # fmt: skip


def test_a_page_applied_twice_changes_nothing_the_second_time(mirror, own_id):
    page = [change(v, path=[OTHER]) for v in md5s(3)]
    do_apply_page(mirror, page, "c1", peer_exchange=OTHER, own_exchange=own_id)
    positions = list(SetEntry.objects.values_list("position_seq", flat=True).order_by("pk"))

    again = do_apply_page(mirror, page, "c1", peer_exchange=OTHER, own_exchange=own_id)

    assert again.applied == 0
    assert list(SetEntry.objects.values_list("position_seq", flat=True).order_by("pk")) == positions


def test_a_tombstone_travels_and_an_unknown_one_is_nothing(mirror, own_id):
    kept, gone, never = md5s(3)
    do_apply_page(mirror, [change(kept, path=[OTHER]), change(gone, path=[OTHER])], "c1",
                  peer_exchange=OTHER, own_exchange=own_id)  # fmt: skip

    outcome = do_apply_page(
        mirror, [change(gone, path=[OTHER], state="tombstone"),
                 change(never, path=[OTHER], state="tombstone")],
        "c2", peer_exchange=OTHER, own_exchange=own_id,
    )  # fmt: skip

    assert (outcome.applied, outcome.tombstoned) == (1, 1)
    states = dict(SetEntry.objects.values_list("value", "state"))
    assert states == {kept: "active", gone: "tombstone"}


def test_a_resync_ends_with_exactly_the_origin_active_entries(mirror, own_id):
    stays, stale, new = md5s(3)
    do_apply_page(mirror, [change(stays, path=[OTHER]), change(stale, path=[OTHER])], "c1",
                  peer_exchange=OTHER, own_exchange=own_id)  # fmt: skip

    with Resync(mirror, peer_exchange=OTHER, own_exchange=own_id) as resync:
        resync.add([change(stays, path=[OTHER]), change(new, path=[OTHER])])
        outcome = resync.finish("snap")

    active = set(SetEntry.objects.filter(state="active").values_list("value", flat=True))
    assert active == {stays, new}
    assert outcome.tombstoned == 1
    mirror.refresh_from_db()
    assert (mirror.cursor, mirror.resyncs) == ("snap", 1)


def test_a_resync_cut_short_loses_nothing_and_the_next_one_ends_exact(mirror, own_id):
    stays, stale, new = md5s(3)
    do_apply_page(mirror, [change(stays, path=[OTHER]), change(stale, path=[OTHER])], "c1",
                  peer_exchange=OTHER, own_exchange=own_id)  # fmt: skip
    snapshot = [change(stays, path=[OTHER]), change(new, path=[OTHER])]

    with pytest.raises(ConnectionError), Resync(mirror, peer_exchange=OTHER,
                                                own_exchange=own_id) as resync:  # fmt: skip
        resync.add(snapshot[:1])
        resync.add(snapshot[1:])
        raise ConnectionError("the peer went away before the snapshot's end")

    # Each chunk was applied; nothing was tombstoned, the cursor did not move.
    states = dict(SetEntry.objects.values_list("value", "state"))
    assert states == {stays: "active", stale: "active", new: "active"}
    mirror.refresh_from_db()
    assert (mirror.cursor, mirror.resyncs) == ("c1", 0)

    with Resync(mirror, peer_exchange=OTHER, own_exchange=own_id) as resync:
        resync.add(snapshot[1:])  # a new snapshot: the first attempt's marks count for nothing
        resync.add(snapshot[:1])
        outcome = resync.finish("snap")

    states = dict(SetEntry.objects.values_list("value", "state"))
    assert states == {stays: "active", stale: "tombstone", new: "active"}
    assert outcome.tombstoned == 1 and not ResyncSeen.objects.exists()


def test_labels_and_names_holding_quotes_commas_and_backslashes_arrive_as_sent(mirror, own_id):
    odd = ['a"b', "c,d", "e\\f", "{g}", "NULL", "tab\there"]
    value = md5s(1)[0]

    do_apply_page(mirror, [change(value, path=[OTHER], labels=odd, contributor_names=odd)],
                  "c1", peer_exchange=OTHER, own_exchange=own_id)  # fmt: skip

    entry = SetEntry.objects.get()
    assert entry.labels == sorted(odd)
    assert entry.contributor_names == sorted(f"{n}@{OTHER}" for n in odd)
