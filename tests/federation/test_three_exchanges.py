"""Done when (issue 15): three exchanges as real processes on loopback, each with its own
database and Redis, peered in a ring A→B→C→A and driven by `manage.py` commands: what may leave
leaves, once, and nothing else does.

The tests share the ring and run in order, each building on what the ones before left."""

import base64
import secrets
import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import requests

from hashx.client import Client
from hashx.errors import HashxError
from tests.federation.exchanges import Exchange, exchanges
from tests.helpers import eventually

pytestmark = pytest.mark.worker


def md5s(count: int) -> list[str]:
    return [secrets.token_hex(16) for _ in range(count)]


def signals(values: list[str]) -> list[dict[str, str]]:
    return [{"type": "md5", "value": value} for value in values]


class Ring:
    def __init__(self, found: dict[str, Exchange], members: dict[str, Client]) -> None:
        self.a, self.b, self.c = found["a"], found["b"], found["c"]
        self.acme, self.globex = members["a"], members["b"]
        self.ids = {n: e.sql("SELECT exchange_id FROM exchange_exchangeidentity")[0][0]
                    for n, e in found.items()}  # fmt: skip

    def publish(self, slug: str, values: list[str]) -> None:
        for start in range(0, len(values), 10_000):
            batch = self.acme.publish(slug, signals(values[start : start + 10_000]))
            done = self.acme.wait_for_batch(batch["batch"], poll=0.2, timeout=300)
            assert done["state"] == "done", done

    def around(self) -> None:
        """One pull along each edge of the ring: B from A, C from B, A from C."""
        self.b.pull("a")
        self.c.pull("b")
        self.a.pull("c")


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ring]:
    tmp = tmp_path_factory.mktemp("federation")
    # A merges what its members publish, and dispatches and sends webhooks (push-assist wakes
    # B's pulls).
    workers = {"a": "ingest,default,fanout,webhooks"}
    with exchanges(["a", "b", "c"], tmp, workers=workers) as found:
        members = {"a": found["a"].member("acme", tmp), "b": found["b"].member("globex", tmp)}
        # Peering is mutual: each side pins the other (each may then read the other's sets).
        Exchange.peer_all([(found[one], found[other]) for one, other in
                           [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b"), ("c", "a"),
                            ("a", "c")]])  # fmt: skip
        yield Ring(found, members)


SHARED = md5s(3)


def test_a_publish_at_a_is_visible_to_b_members_after_one_pull(ring: Ring) -> None:
    ring.acme.create_set("shared", "Shared", tlp="green", distribution="federated",
                         federation_hops=3)  # fmt: skip
    ring.publish("shared", SHARED)

    pulled = ring.b.pull("a")

    assert "a/shared: 3 applied (3 new" in pulled.stdout, pulled.stdout
    mirror = ring.globex.get_set("a--shared")
    assert mirror["origin"] == {
        "exchange": ring.ids["a"],
        "set": "shared",
        "url": ring.a.base,
        "path": [ring.ids["a"]],
        "root_set": "shared",
    }
    changes = ring.globex.changes(sets=["a--shared"])["changes"]
    assert sorted(c["value"] for c in changes) == sorted(SHARED)
    for change in changes:
        assert change["state"] == "active"
        assert change["path"] == [ring.ids["a"], ring.ids["b"]]
        assert change["hops_left"] == 2
        assert change["origin"]["exchange"] == ring.ids["a"]
        assert change["origin"]["set"] == "shared"
        assert change["contributor_names"] == [f"acme@{ring.ids['a']}"[:64]]
    # add_peer made A's organisation at B: a peer, active, holding A's pinned key.
    ((kind, status, exchange_id, keys),) = ring.b.sql(
        "SELECT o.kind, o.status, o.exchange_id, array_agg(k.key_id) FROM members_organisation o"
        " JOIN members_signingkey k ON k.organisation_id = o.id WHERE o.slug = 'a'"
        " GROUP BY o.kind, o.status, o.exchange_id"
    )
    assert (kind, status, exchange_id) == ("peer", "active", ring.ids["a"])
    assert keys == [ring.a.fingerprint().removeprefix("SHA256:")]
    # Both sides audit the pull: A saw peer B pull its set, B applied it.
    served = ring.a.sql(
        "SELECT e.details->>'count' FROM audit_auditevent e JOIN members_organisation o"
        " ON o.id = e.actor_org_id WHERE e.action = 'feed.pulled' AND o.slug = 'b'"
    )
    assert ("3",) in served
    (applied,) = ring.b.sql(
        "SELECT details->'sets'->'shared'->>'applied' FROM audit_auditevent"
        " WHERE action = 'federation.pulled'"
    )
    assert applied == ("3",)
    assert ring.b.sql("SELECT count(*) FROM audit_auditevent WHERE action = 'federation.peer.added'"
                      ) == [(2,)]  # fmt: skip
    # Mirrored entries are entries like any other: they match.
    answer = ring.globex.match(signals(SHARED[:1]))
    assert [m["set"] for m in answer["results"][0]["matches"]] == ["a--shared"]


def test_a_ring_of_three_holds_each_value_once_with_no_echo(ring: Ring) -> None:
    ring.c.pull("b")
    ring.a.pull("c")
    ring.around()
    # Pulls against the ring's direction bring nothing back either.
    ring.a.pull("b")
    ring.b.pull("c")

    for exchange in (ring.a, ring.b, ring.c):
        assert exchange.active_entries(SHARED) == dict.fromkeys(SHARED, 1), exchange.name
    # Nor do sets come back: A's set is mirrored at B, that mirror at C, and no further.
    mirrors = {e.name: {slug for (slug,) in e.sql("SELECT slug FROM signals_hashset")
                        if "--" in slug} for e in (ring.a, ring.b, ring.c)}  # fmt: skip
    assert mirrors == {"a": set(), "b": {"a--shared"}, "c": {"b--a--shared"}}
    (hops,) = ring.c.sql(
        "SELECT DISTINCT hops_left, path FROM signals_setentry e"
        " JOIN signals_hashset h ON h.id = e.hash_set_id WHERE h.slug = 'b--a--shared'"
    )
    assert hops == (1, [ring.ids["a"], ring.ids["b"]])


def test_a_retraction_at_a_is_gone_from_b_and_c(ring: Ring) -> None:
    ring.acme.retract("shared", signals(SHARED[:1]))

    ring.around()

    for exchange in (ring.a, ring.b, ring.c):
        assert exchange.active_entries(SHARED) == dict.fromkeys(SHARED[1:], 1), exchange.name
    states = ring.c.sql(
        "SELECT e.state FROM signals_setentry e WHERE e.value = %s",
        [SHARED[0]],
    )
    assert states == [("tombstone",)]


def test_amber_and_coalition_sets_never_leave_a(ring: Ring) -> None:
    with pytest.raises(HashxError) as refused:
        ring.acme.create_set("amber", "Amber", tlp="amber", distribution="federated")
    assert refused.value.status == 422 and refused.value.type.endswith("/not-federable")
    ring.acme.create_set("amber", "Amber", tlp="amber", distribution="coalition")
    ring.acme.create_set("coalition", "Coalition", tlp="green", distribution="coalition")
    kept = md5s(4)
    ring.publish("amber", kept[:2])
    ring.publish("coalition", kept[2:])
    with pytest.raises(HashxError) as refused:
        ring.acme.request("PATCH", "/api/v1/sets/amber", json={"distribution": "federated"})
    assert refused.value.status == 422

    ring.around()

    assert ring.b.active_entries(kept) == {}
    assert ring.c.active_entries(kept) == {}
    mirrored = {slug for (slug,) in ring.b.sql("SELECT slug FROM signals_hashset")}
    assert not mirrored & {"a--amber", "a--coalition"}


def test_a_mirror_with_no_hops_left_is_never_passed_on(ring: Ring) -> None:
    ring.acme.create_set("one-hop", "One hop", tlp="clear", distribution="federated")
    values = md5s(3)
    ring.publish("one-hop", values)

    ring.around()

    assert ring.b.active_entries(values) == dict.fromkeys(values, 1)
    assert ring.c.active_entries(values) == {}
    assert ring.a.active_entries(values) == dict.fromkeys(values, 1)


def test_an_opinion_at_b_reaches_a_aggregate(ring: Ring) -> None:
    answer = ring.globex.opinions(
        "a--shared", [{"type": "md5", "value": SHARED[1], "category": "negative"}]
    )
    assert answer["accepted"] == 1, answer

    pulled = ring.b.pull("a")

    assert "a: 1 opinions forwarded" in pulled.stdout, pulled.stdout
    at_a = {c["value"]: c for c in ring.acme.changes(sets=["shared"])["changes"]}
    assert at_a[SHARED[1]]["opinions"]["negative"] == 1
    assert at_a[SHARED[2]]["opinions"]["negative"] == 0
    (opinion,) = ring.a.sql(
        "SELECT o.slug, p.category FROM signals_opinion p"
        " JOIN members_organisation o ON o.id = p.organisation_id"
    )
    assert opinion == ("b", "negative")  # the opinion of exchange B, as A's peer


def _mirror_count(exchange: Exchange, slug: str) -> int:
    (count,) = exchange.sql(
        "SELECT count(*) FROM signals_setentry e JOIN signals_hashset h ON h.id = e.hash_set_id"
        " WHERE h.slug = %s AND e.state = 'active'",
        [slug],
    )[0]
    return int(count)


def test_a_pull_killed_midway_resumes_with_nothing_lost_or_doubled(ring: Ring) -> None:
    ring.acme.create_set("bulk", "Bulk", tlp="green", distribution="federated")
    ring.b.pull("a")  # the mirror set, empty
    values = md5s(6_000)
    ring.publish("bulk", values)
    # A value the second checkpoint of A's feed brings (A checkpoints every 5,000 changes): B
    # holds it in an open transaction, so the pull applies the first checkpoint, then waits.
    (held,) = ring.a.sql(
        "SELECT e.value FROM signals_setentry e"
        " JOIN signals_hashset h ON h.id = e.hash_set_id WHERE h.slug = 'bulk'"
        " ORDER BY e.position_xid, e.position_seq OFFSET 5500 LIMIT 1"
    )[0]
    blocker = psycopg2.connect(ring.b.database_url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute(
                "INSERT INTO signals_setentry (hash_set_id, type, value, state, labels,"
                " contributor_count, contributor_names, positive_count, negative_count,"
                " investigation_count, first_seen, updated_at)"
                " SELECT h.id, 'md5', %s, 'active', '{}', 0, '{}', 0, 0, 0, now(), now()"
                " FROM signals_hashset h WHERE h.slug = 'a--bulk'",
                [held],
            )
            assert cursor.rowcount == 1
        pull = ring.b.popen_manage("pull_peers", "a")

        def waiting_on_the_blocker() -> bool:
            assert pull.poll() is None, ring.b.log("manage")[-2000:]
            return bool(ring.b.sql("SELECT 1 FROM pg_locks WHERE NOT granted"))

        eventually(waiting_on_the_blocker, timeout=120, what="the pull waiting mid-way")
        pull.send_signal(signal.SIGKILL)
        pull.wait()
    finally:
        blocker.rollback()
        blocker.close()
    assert _mirror_count(ring.b, "a--bulk") == 5_000  # the first checkpoint, and only it

    def resumed() -> Any:
        done = ring.b.pull("a")
        return "skipped" not in done.stdout and done

    # The killed pull's session lets go of the peer's lock once Postgres sees it gone.
    done = eventually(resumed, timeout=60, interval=1, what="a pull that is not skipped")
    assert "a/bulk: 1000 applied (1000 new" in done.stdout, done.stdout
    assert _mirror_count(ring.b, "a--bulk") == 6_000
    assert ring.b.active_entries(values) == dict.fromkeys(values, 1)


def test_a_peer_away_past_tombstone_retention_resyncs_to_exactly_the_origin_entries(
    ring: Ring,
) -> None:
    ring.acme.create_set("away", "Away", tlp="green", distribution="federated")
    values = md5s(3)
    ring.publish("away", values)
    ring.b.pull("a")
    ring.acme.retract("away", signals(values[:1]))
    # A's beat purges the tombstone once it is past retention (here: 91 days from now), before
    # B pulled it: B's cursor is now too old (410).
    ring.a.manage(
        "shell", "-c",
        "from datetime import timedelta; from django.utils import timezone;"
        " from signals.actions.expiry import do_purge_tombstones;"
        " assert do_purge_tombstones(now=timezone.now() + timedelta(days=91))",
    )  # fmt: skip

    ring.b.pull("a")

    assert ring.b.active_entries(values) == dict.fromkeys(values[1:], 1)
    assert _mirror_count(ring.b, "a--away") == 2
    assert _mirror_count(ring.b, "a--bulk") == 6_000
    ((resyncs,),) = ring.b.sql(
        "SELECT resyncs FROM federation_mirroredset WHERE remote_slug = 'away'"
    )
    assert resyncs == 1


def test_with_push_assist_a_publish_at_a_reaches_b_with_no_pull_command(ring: Ring) -> None:
    ((subscription, sets, error),) = ring.b.sql(
        "SELECT push_subscription, push_sets, push_error FROM federation_peer WHERE name = 'a'"
    )
    assert subscription and error == "", error
    assert sets == ["away", "bulk", "one-hop", "shared"]
    # B's worker runs the pulls that A's webhooks ask for (signed by A's key, verified by B).
    ring.b.start_worker("federation")
    value = md5s(1)

    ring.publish("shared", value)

    eventually(lambda: ring.b.active_entries(value) == {value[0]: 1}, timeout=120,
               what="the value at B, pulled by B's worker on A's webhook")  # fmt: skip
    assert "federation.pull_peer" in ring.b.log("worker")


def test_a_push_not_signed_by_the_peer_pinned_key_is_refused(ring: Ring) -> None:
    url = f"{ring.b.base}/federation/push/{ring.ids['a']}"
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time())),
               "webhook-signature": "v1a," + base64.b64encode(bytes(64)).decode()}  # fmt: skip

    refused = requests.post(url, data=b"{}", headers=headers, timeout=10)
    unknown = requests.post(f"{ring.b.base}/federation/push/hx-nobody", data=b"{}",
                            headers=headers, timeout=10)  # fmt: skip

    assert (refused.status_code, refused.json()["type"].rsplit("/", 1)[1]) == (
        401, "signature-invalid")  # fmt: skip
    assert unknown.status_code == 404


def test_a_set_reached_from_its_origin_and_through_b_is_one_mirror_at_c(ring: Ring) -> None:
    values = md5s(2)
    ring.publish("shared", values)
    # B's worker also pulls A on its webhooks (push-assist): a pull of ours may step aside.
    eventually(lambda: ring.b.pull("a") and ring.b.active_entries(values) == dict.fromkeys(
        values, 1), timeout=60, interval=1, what="the values at B")  # fmt: skip
    ring.c.pull("b")

    ring.c.pull("a")  # C now reads A's set from its origin too: a second path

    assert ring.c.active_entries(values) == dict.fromkeys(values, 1)
    ((paths, mirrors),) = ring.c.sql(
        "SELECT count(*), count(DISTINCT hash_set_id) FROM federation_mirroredset"
        " WHERE remote_slug IN ('shared', 'a--shared')"
    )
    assert (paths, mirrors) == (2, 1)
    ((via,),) = ring.c.sql(
        "SELECT e.via FROM signals_setentry e WHERE e.value = %s",
        [values[0]],
    )
    assert sorted(via) == sorted([ring.ids["a"], ring.ids["b"]])

    ring.acme.retract("shared", signals(values[:1]))
    ring.c.pull("a")
    # The origin's tombstone came one way; through B (not pulled since) it is still served.
    assert ring.c.active_entries(values) == dict.fromkeys(values, 1)
    eventually(lambda: ring.b.pull("a") and ring.b.active_entries(values) == {values[1]: 1},
               timeout=60, interval=1, what="the retraction at B")  # fmt: skip
    ring.c.pull("b")
    assert ring.c.active_entries(values) == {values[1]: 1}


def _pinned(exchange: Exchange, peer: str) -> tuple[str, str, str]:
    ((row),) = exchange.sql(
        "SELECT key_id, state, last_error FROM federation_peer WHERE name = %s", [peer]
    )
    return row


def test_a_peer_key_change_is_followed_only_with_proof_from_its_old_key(ring: Ring) -> None:
    old = ring.c.fingerprint().removeprefix("SHA256:")
    announced = ring.c.manage("rotate_exchange_key").stdout
    new = announced.split("SHA256:")[1].split(" ")[0]
    ring.a.pull("c")  # A learns C's next key, endorsed by the key A pinned
    ring.b.pull("c")
    ring.c.manage("rotate_exchange_key", "--finish")

    ring.c.pull("b")  # C now signs with its new key, which B already accepts
    ring.a.pull("c")  # and A follows it

    assert _pinned(ring.a, "c") == (new, "active", "")
    assert _pinned(ring.b, "c")[0] == old  # B follows at its next pull of C
    ring.b.pull("c")
    assert _pinned(ring.b, "c") == (new, "active", "")
    # A key that changes with no proof (say, a new key file) stops the peer, visibly.
    ring.c.manage(
        "shell", "-c",
        "from exchange.models import ExchangeKey;"
        " from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey;"
        " from hashx.keys import jwk_thumbprint, raw_public_bytes, private_key_to_pem;"
        " k = Ed25519PrivateKey.generate(); p = raw_public_bytes(k.public_key());"
        " ExchangeKey.objects.update(current=False);"
        " ExchangeKey.objects.create(kid=jwk_thumbprint(p), public_key=p,"
        " private_key_pem=private_key_to_pem(k), current=True)",
    )  # fmt: skip

    failed = ring.a.pull("c", check=False)

    assert failed.returncode != 0
    key, state, error = _pinned(ring.a, "c")
    assert (key, state) == (new, "stopped")
    assert "key changed from" in error and "without proof" in error, error


def test_revoking_b_key_at_a_stops_b_pulls_with_a_clear_error(ring: Ring) -> None:
    ring.a.manage(
        "shell", "-c",
        "from members.actions.keys import do_revoke_key; from members.models import SigningKey;"
        " [do_revoke_key(k, 'peering ended') for k in SigningKey.objects.filter("
        "organisation__slug='b')]",
    )  # fmt: skip

    failed = ring.b.pull("a", check=False)

    assert failed.returncode != 0
    assert "401 Revoked key" in failed.stderr, failed.stderr
    ((state, error),) = ring.b.sql("SELECT state, last_error FROM federation_peer WHERE name = 'a'")
    assert state == "stopped"
    assert "answered 401 Revoked key" in error, error
    assert "skipped (stopped)" in ring.b.pull("a").stdout
