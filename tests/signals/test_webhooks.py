"""Webhook delivery end to end: a real worker POSTs to a real receiver on loopback."""

import itertools
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
import time_machine
from django.db import connections
from django.utils import timezone

from audit.models import AuditEvent
from exchange import outbound
from exchange.actions.identity import published_jwks
from hashx.webhooks import WebhookVerificationError, verify
from signals.actions.webhooks import do_dispatch, do_send, retry_delay
from signals.feed.positions import Position
from signals.models import Delivery, Subscription
from signals.tasks import dispatch_webhooks
from tests.helpers import eventually
from tests.receiver import HOSTILE, WELL_FORMED, Answer, Authority, Receiver, Silent
from tests.signals.conftest import PDQ, merged, pdq, publish

pytestmark = pytest.mark.django_db(transaction=True)

WORKER_ENV = {
    "HASHX_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
    "HASHX_WEBHOOK_ALLOW_HTTP": "1",
    "HASHX_WEBHOOK_RETRY_BASE_SECONDS": "1",
    "HASHX_WEBHOOK_LEASE_SECONDS": "4",
    "HASHX_WEBHOOK_TIMEOUT_SECONDS": "2",
    "HASHX_WEBHOOK_PAGE_SIZE": "3",
}


@pytest.fixture(autouse=True)
def quick_webhooks(loopback_allowed, settings):
    settings.HASHX_WEBHOOK_RETRY_BASE_SECONDS = 1
    settings.HASHX_WEBHOOK_TIMEOUT_SECONDS = 2


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def webhook_worker(start_worker):
    workers = []

    def start():
        workers.append(start_worker("webhooks", env=WORKER_ENV))
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()


def subscribe(member, url, **fields):
    answer = member.api.post(
        "/api/v1/subscriptions",
        {"url": url, "sets": ["acme-csam"], "cursor": Position(0, 0).cursor(), **fields},
    )
    assert answer.status_code == 201, answer.json()
    return answer.json()["id"]


def beat_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """What beat does every 2 s (dispatch: retries that fell due, reclaimed leases), faster."""

    def beaten() -> bool:
        if condition():
            return True
        dispatch_webhooks.delay()
        return False

    eventually(beaten, timeout=timeout, interval=0.3)


def changes_of(requests):
    return [c for r in requests for c in r.payload["data"]["changes"]]


def test_a_delivery_is_signed_by_the_exchange_and_verifies(
    publisher, subscriber, shared_set, receiver, webhook_worker
):
    webhook_worker()
    subscribe(subscriber, receiver.url)
    publish(publisher, "acme-csam", [pdq(0, labels=["csam"])])
    (request,) = receiver.wait_for(1)
    keys = published_jwks()["keys"]
    assert verify(request.body, request.headers, keys) == request.headers["webhook-id"]
    assert request.payload["type"] == "hashx.changes"
    (change,) = request.payload["data"]["changes"]
    assert (change["value"], change["state"], change["labels"]) == (PDQ[0], "active", ["csam"])
    with pytest.raises(WebhookVerificationError):
        verify(request.body.replace(b"csam", b"CSAM"), request.headers, keys)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(request.body, request.headers, keys, now=time.time() + 3600)
    with pytest.raises(WebhookVerificationError, match="whole number"):
        verify(request.body, {**request.headers, "webhook-timestamp": "²"}, keys)
    beat_until(lambda: Delivery.objects.filter(state="delivered").exists())
    pushed = AuditEvent.objects.get(action="feed.pushed")
    assert pushed.actor_org_id == subscriber.org.pk and pushed.details["count"] == 1


def test_pages_arrive_in_order_each_starting_where_the_last_ended(
    publisher, subscriber, shared_set, receiver, webhook_worker
):
    webhook_worker()
    sid = subscribe(subscriber, receiver.url)
    for batch in range(4):
        merged(publish(publisher, "acme-csam", [pdq(n) for n in range(batch * 4, batch * 4 + 4)]))
    publisher.api.post("/api/v1/sets/acme-csam/retractions", {"signals": [pdq(0)]})
    feed = subscriber.api.get("/api/v1/changes?limit=100").json()

    def all_pushed():
        pushed = changes_of(receiver.received)
        # The latest state of each entry: pdq(0) may come only as a tombstone.
        return len({c["value"] for c in pushed}) == 16 and pushed[-1]["state"] == "tombstone"

    beat_until(all_pushed)
    requests = receiver.received
    # One page in flight at a time: each page starts at the previous page's cursor.
    for before, after in itertools.pairwise(requests):
        assert after.payload["data"]["from"] == before.payload["data"]["cursor"]
    assert all(len(r.payload["data"]["changes"]) <= 3 for r in requests)
    values = [(c["value"], c["state"]) for c in changes_of(requests)]
    final = subscriber.api.get("/api/v1/changes?limit=100").json()
    assert len(set(r.headers["webhook-id"] for r in requests)) == len(requests)
    assert values[-1] == (PDQ[0], "tombstone")
    assert {v for v, s in values} == set(PDQ[:16])
    assert {v for v, s in values if s == "active"} >= set(PDQ[1:16])
    assert requests[-1].payload["data"]["cursor"] == final["cursor"]
    assert feed["changes"]  # the pull API saw the same data
    subscription = Subscription.objects.get(pk=sid)
    assert Position(subscription.cursor_xid, subscription.cursor_seq).cursor() == final["cursor"]


def test_a_receiver_answering_500_gets_the_same_webhook_id_again(
    publisher, subscriber, shared_set, receiver, webhook_worker
):
    webhook_worker()
    receiver.script = [Answer(500), Answer(503, {"Retry-After": "1"}), Answer(200)]
    sid = subscribe(subscriber, receiver.url)
    publish(publisher, "acme-csam", [pdq(0)])
    beat_until(lambda: len(receiver.received) >= 3)
    first, second, third = receiver.received[:3]
    assert (
        first.headers["webhook-id"] == second.headers["webhook-id"] == third.headers["webhook-id"]
    )
    assert first.body == second.body == third.body
    delivery = Delivery.objects.get()
    beat_until(lambda: Delivery.objects.get().state == "delivered")
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status) == (3, 200)
    listed = subscriber.api.get(f"/api/v1/subscriptions/{sid}/deliveries").json()["results"]
    assert listed[0]["attempts"] == 3 and listed[0]["state"] == "delivered"
    assert Subscription.objects.get(pk=sid).failing_since is None


def test_a_worker_killed_mid_delivery_redelivers_after_restart(
    publisher, subscriber, shared_set, receiver, webhook_worker
):
    first_worker = webhook_worker()
    receiver.script = [Answer(200, delay=1.5)]
    subscribe(subscriber, receiver.url)
    publish(publisher, "acme-csam", [pdq(0), pdq(1)])
    (in_flight,) = receiver.wait_for(1)
    first_worker.process.send_signal(signal.SIGKILL)
    first_worker.process.wait()
    webhook_worker()
    beat_until(lambda: Delivery.objects.filter(state="delivered").exists())
    again = [
        r
        for r in receiver.received[1:]
        if r.headers["webhook-id"] == in_flight.headers["webhook-id"]
    ]
    assert again and again[0].body == in_flight.body
    assert {c["value"] for c in changes_of(receiver.received)} == {PDQ[0], PDQ[1]}


def test_a_410_disables_the_subscription_and_tells_the_organisation(
    publisher, subscriber, shared_set, receiver
):
    receiver.script = [Answer(410)]
    sid = subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "disabled"
    body = subscriber.api.get(f"/api/v1/subscriptions/{sid}").json()
    assert body["state"] == "disabled" and "410" in body["disabled_reason"]
    events = subscriber.api.get("/api/v1/audit/events?action=signals.subscription.disabled")
    assert events.json()["results"][0]["details"]["reason"] == body["disabled_reason"]
    assert do_dispatch() == []  # nothing is sent to a disabled endpoint
    resumed = subscriber.api.post(f"/api/v1/subscriptions/{sid}/redeliver", {})
    assert resumed.json()["state"] == "active"
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "delivered"


def test_redeliver_now_leaves_a_page_in_flight_to_its_sender(
    publisher, subscriber, shared_set, receiver
):
    """ "Send the pending page now" (a redeliver without a cursor, or resuming) while it is
    being sent must not release it to a second sender: one delivery in flight at a time."""
    sid = subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()
    assert subscriber.api.post(f"/api/v1/subscriptions/{sid}/redeliver", {}).status_code == 200
    assert do_dispatch() == []
    resumed = subscriber.api.request("PATCH", f"/api/v1/subscriptions/{sid}", {"active": True})
    assert resumed.status_code == 200
    assert do_dispatch() == []
    assert do_send(*claimed) == "delivered"
    assert len(receiver.received) == 1


def test_a_subscription_deleted_while_its_page_is_sent_ends_the_send_quietly(
    publisher, subscriber, shared_set, receiver
):
    receiver.script = [Answer(500, delay=1)]
    sid = subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()
    outcome = []

    def send():
        try:
            outcome.append(do_send(*claimed))
        finally:
            connections.close_all()

    sender = threading.Thread(target=send)
    sender.start()
    receiver.wait_for(1)
    assert subscriber.api.request("DELETE", f"/api/v1/subscriptions/{sid}").status_code == 204
    sender.join()
    assert outcome == ["stale"]
    assert not Delivery.objects.exists()


def test_an_answer_with_nul_bytes_is_recorded_not_sent_again(
    publisher, subscriber, shared_set, receiver
):
    """Postgres text cannot hold NUL: an excerpt carrying one must not make recording the
    attempt fail (the page would go out again at every lease, even after a 2xx)."""
    receiver.script = [Answer(500, body=b"\x00bad"), Answer(200, body=b"ok\x00")]
    subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "retry"
    delivery = Delivery.objects.get()
    assert delivery.response_excerpt == "\ufffdbad"
    with time_machine.travel(delivery.next_attempt_at, tick=False):
        (claimed,) = do_dispatch()
        assert do_send(*claimed) == "delivered"
    assert Delivery.objects.get().response_excerpt == "ok\ufffd"
    assert len(receiver.received) == 2


def test_a_send_that_starts_late_in_its_lease_renews_it(
    publisher, subscriber, shared_set, receiver, settings
):
    """A delivery waits its turn behind the others of its chunk, so its send may start near the
    end of the lease it got when claimed: the send renews the lease as it starts, and no
    dispatch claims the page again while it is in flight."""
    settings.HASHX_WEBHOOK_LEASE_SECONDS = 4
    receiver.script = [Answer(200, delay=1)]
    subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    outcome = []

    def send(claimed):
        try:
            outcome.append(do_send(*claimed))
        finally:
            connections.close_all()

    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        (claimed,) = do_dispatch()
        clock.move_to(start + timezone.timedelta(seconds=3.5))  # half a second of lease left
        sender = threading.Thread(target=send, args=(claimed,))
        sender.start()
        receiver.wait_for(1)
        clock.move_to(start + timezone.timedelta(seconds=5))  # past the first lease
        assert do_dispatch() == []
        sender.join()
    assert outcome == ["delivered"]
    assert len(receiver.received) == 1


def test_an_endpoint_failing_for_days_is_disabled(publisher, subscriber, shared_set, receiver):
    receiver.script = [Answer(500)] * 10
    sid = subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        (claimed,) = do_dispatch()
        assert do_send(*claimed) == "retry"
        clock.move_to(start + timezone.timedelta(hours=71))
        (claimed,) = do_dispatch()
        assert do_send(*claimed) == "retry"
        clock.move_to(start + timezone.timedelta(hours=72, minutes=1))
        (claimed,) = do_dispatch()
        assert do_send(*claimed) == "disabled"
    subscription = Subscription.objects.get(pk=sid)
    assert subscription.state == "disabled" and "72 hours" in subscription.disabled_reason
    assert subscription.last_error == "HTTP 500"


def test_an_address_that_turned_private_is_refused_at_send_time(
    publisher, subscriber, shared_set, receiver, settings
):
    sid = subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    settings.HASHX_OUTBOUND_ALLOWED_NETWORKS = []
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "retry"
    assert receiver.received == []
    assert "loopback" in Subscription.objects.get(pk=sid).last_error


def test_an_endpoint_trickling_its_answer_is_cut_off_at_the_send_deadline(
    publisher, subscriber, shared_set, receiver, settings
):
    """Every byte arrives well within the socket timeout, but the whole answer would take
    longer than the lease: the send is cut off at its deadline (half the lease) and retried
    like any failure, so no second worker ever claims a delivery still in flight."""
    settings.HASHX_WEBHOOK_LEASE_SECONDS = 3
    receiver.script = [Answer(200, trickle=0.25)]
    sid = subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "retry"
    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.claim, delivery.attempts) == ("pending", None, 1)
    assert delivery.last_error == "no complete answer within 1.5 s"
    assert Subscription.objects.get(pk=sid).failing_since is not None
    with time_machine.travel(delivery.next_attempt_at, tick=False):  # the backoff is over
        (claimed,) = do_dispatch()
        assert do_send(*claimed) == "delivered"


@pytest.mark.parametrize("answer", HOSTILE.values(), ids=HOSTILE.keys())
def test_an_answer_short_of_whole_and_well_formed_is_a_failed_attempt(
    answer, publisher, subscriber, shared_set, receiver, settings
):
    """A 200 counts only with its header section ended by a blank line and its body read to
    its end (its length, its last chunk, or a clean close), all within the send deadline:
    anything less is a failure, retried with the same page later, never "delivered"."""
    settings.HASHX_WEBHOOK_LEASE_SECONDS = 1  # a deadline of 0.5 s
    receiver.script = [answer]
    sid = subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "retry"
    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.delivered_at, delivery.attempts) == ("pending", None, 1)
    assert delivery.last_error and delivery.last_status is None, delivery.last_error
    assert Subscription.objects.get(pk=sid).last_delivered_at is None
    with time_machine.travel(delivery.next_attempt_at, tick=False):
        (claimed,) = do_dispatch()
        assert do_send(*claimed) == "delivered"
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


@pytest.mark.parametrize("answer", WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_a_whole_answer_is_delivered_however_its_body_is_framed(
    answer, publisher, subscriber, shared_set, receiver
):
    receiver.script = [answer]
    subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "delivered"
    assert Delivery.objects.get().response_excerpt == answer.body[:500].decode()


def test_a_tls_handshake_that_never_ends_is_cut_off_at_the_send_deadline(
    publisher, subscriber, shared_set, settings
):
    """The socket timeout bounds each read of the handshake, and the handshake as a whole
    in Python: the send deadline must cut it too, not wait for a timeout far past it."""
    settings.HASHX_WEBHOOK_LEASE_SECONDS = 1  # a deadline of 0.5 s
    settings.HASHX_WEBHOOK_TIMEOUT_SECONDS = 30
    with Silent(patience=10) as silent:
        subscribe(subscriber, silent.https_url)
        merged(publish(publisher, "acme-csam", [pdq(0)]))
        (claimed,) = do_dispatch()
        assert do_send(*claimed) == "retry"
        eventually(silent.hung_up.is_set, timeout=5, what="the exchange to hang up")
    assert Delivery.objects.get().last_error == "no complete answer within 0.5 s"


@pytest.fixture
def authority(monkeypatch) -> Authority:
    """A certificate authority the exchange trusts, as it trusts the system's in production."""
    authority = Authority()
    monkeypatch.setattr(outbound, "_tls_context", authority.client)
    return authority


def test_pages_go_over_tls_with_a_checked_certificate_and_one_kept_connection(
    publisher, subscriber, shared_set, authority
):
    with Receiver(keep_alive=True, tls=authority.server("127.0.0.1")) as receiver:
        subscribe(subscriber, receiver.url)
        for batch in range(2):
            merged(publish(publisher, "acme-csam", [pdq(batch)]))
            (claimed,) = do_dispatch()
            assert do_send(*claimed) == "delivered"
        assert (len(receiver.received), receiver.connections) == (2, 1)
        assert changes_of(receiver.received)[0]["value"] == PDQ[0]


def test_a_certificate_for_another_name_is_refused(publisher, subscriber, shared_set, authority):
    with Receiver(tls=authority.server("hooks.example.org")) as receiver:
        subscribe(subscriber, receiver.url)
        merged(publish(publisher, "acme-csam", [pdq(0)]))
        (claimed,) = do_dispatch()
        assert do_send(*claimed) == "retry"
        assert receiver.received == []
    assert "certificate verify failed" in Delivery.objects.get().last_error


@pytest.mark.parametrize("tls_close", [True, False], ids=["TLS's close", "a bare hang-up"])
def test_over_tls_a_body_ended_by_closing_counts_only_with_tls_close(
    tls_close, publisher, subscriber, shared_set, authority
):
    """A body without length or chunks ends where the connection does; over TLS only TLS's own
    close says it ended there, where a bare hang-up may have cut it short."""
    with Receiver(tls=authority.server("127.0.0.1")) as receiver:
        receiver.script = [Answer(raw=b"HTTP/1.1 200 OK\r\n\r\nall of it", tls_close=tls_close)]
        subscribe(subscriber, receiver.url)
        merged(publish(publisher, "acme-csam", [pdq(0)]))
        (claimed,) = do_dispatch()
        assert do_send(*claimed) == ("delivered" if tls_close else "retry")
    delivery = Delivery.objects.get()
    if tls_close:
        assert delivery.response_excerpt == "all of it"
    else:
        assert "EOF" in delivery.last_error, delivery.last_error


def test_a_slow_name_lookup_counts_against_the_send_deadline(
    publisher, subscriber, shared_set, receiver, settings, monkeypatch
):
    """A lookup cannot be interrupted; the time it took comes off the deadline, so lookup and
    answer together stay inside the lease. (A real wait: the deadline is measured on the
    monotonic clock, which time_machine does not move; a short lease keeps it to 0.15 s.)"""
    settings.HASHX_WEBHOOK_LEASE_SECONDS = 0.2
    lookup, slow = socket.getaddrinfo, [0.15]  # the exchange's own lookup; connecting is quick

    def slow_lookup(*args, **kwargs):
        time.sleep(slow.pop() if slow else 0)
        return lookup(*args, **kwargs)

    subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()
    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    assert do_send(*claimed) == "retry"
    assert Delivery.objects.get().last_error.startswith("no complete answer within 0.1 s")
    assert receiver.received == []


def test_filters_leave_out_other_types_and_labels(publisher, subscriber, shared_set, receiver):
    subscribe(subscriber, receiver.url, labels=["terror"], signal_types=["pdq"])
    merged(
        publish(
            publisher,
            "acme-csam",
            [
                pdq(0, labels=["csam"]),
                pdq(1, labels=["terror"]),
                {"type": "md5", "value": "d41d8cd98f00b204e9800998ecf8427e", "labels": ["terror"]},
            ],
        )
    )
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "delivered"
    (request,) = receiver.received
    assert [c["value"] for c in request.payload["data"]["changes"]] == [PDQ[1]]


def test_subscriptions_filtering_one_page_parse_each_change_once(
    publisher, subscriber, shared_set, receiver, monkeypatch
):
    """Subscriptions at the same cursor over the same sets share one read of the feed, and
    their filters share one parse of each change (not one per subscription)."""
    from signals.actions import webhooks

    for labels in (["csam"], ["terror"], ["csam", "terror"]):
        subscribe(subscriber, receiver.url, labels=labels)
    merged(publish(publisher, "acme-csam", [pdq(0, labels=["csam"]), pdq(1, labels=["terror"])]))
    parsed = []

    def loads(text):
        parsed.append(text)
        return json.loads(text)

    monkeypatch.setattr(webhooks, "json", SimpleNamespace(loads=loads, dumps=json.dumps))
    do_dispatch()
    assert len(parsed) == 2
    assert sorted(d.count for d in Delivery.objects.all()) == [1, 1, 2]


def test_retries_back_off_exponentially_with_jitter_and_honour_retry_after(settings):
    from exchange.outbound import Answer as HttpAnswer

    settings.HASHX_WEBHOOK_RETRY_BASE_SECONDS = 10
    settings.HASHX_WEBHOOK_RETRY_MAX_SECONDS = 3600
    now = timezone.now()
    delays = [retry_delay(n, None, now) for n in (1, 2, 3, 10, 30)]
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and 20 <= delays[2] <= 40
    assert 1800 <= delays[3] <= 3600 and 1800 <= delays[4] <= 3600
    assert retry_delay(1, HttpAnswer(429, {"retry-after": "120"}, ""), now) == 120
    assert 5 <= retry_delay(1, HttpAnswer(503, {"retry-after": "²"}, ""), now) <= 10  # backoff
    later = (now + timezone.timedelta(seconds=300)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 290 <= retry_delay(1, HttpAnswer(503, {"retry-after": later}, ""), now) <= 301
    assert retry_delay(1, HttpAnswer(503, {"retry-after": "99999"}, ""), now) == 3600


def test_a_receiver_checks_a_saved_delivery_with_the_cli(
    publisher, subscriber, shared_set, receiver, tmp_path
):
    from tests.cli import hashx

    subscribe(subscriber, receiver.url)
    merged(publish(publisher, "acme-csam", [pdq(0)]))
    (claimed,) = do_dispatch()
    do_send(*claimed)
    (request,) = receiver.received
    body, headers, keys = tmp_path / "body", tmp_path / "headers", tmp_path / "jwks.json"
    body.write_bytes(request.body)
    headers.write_text("".join(f"{k}: {v}\n" for k, v in request.headers.items()))
    keys.write_text(json.dumps(published_jwks()))
    verified = hashx("webhook-verify", str(body), str(headers), "--keys", str(keys))
    assert f"verified {request.headers['webhook-id']}" in verified.stdout
    body.write_bytes(request.body + b" ")
    refused = hashx("webhook-verify", str(body), str(headers), "--keys", str(keys), check=False)
    assert refused.returncode == 2 and "does not verify" in refused.stderr
    for bad_keys, reason in (("not json", "not JSON"), ('{"keys": [{"kty": "RSA"}]}', "unusable")):
        keys.write_text(bad_keys)
        broken = hashx("webhook-verify", str(body), str(headers), "--keys", str(keys), check=False)
        assert broken.returncode == 2 and reason in broken.stderr, broken.stderr
    headers.write_text("[1]")
    broken = hashx("webhook-verify", str(body), str(headers), "--keys", str(keys), check=False)
    assert broken.returncode == 2 and "name: value" in broken.stderr


def test_a_page_cut_past_filtered_out_pages_is_delivered_once(
    settings, publisher, subscriber, shared_set, receiver
):
    """Pages of only unwanted changes are skipped into the next delivery, which then spans
    them; once it is delivered the cursor moves past it, and nothing is sent again."""
    settings.HASHX_WEBHOOK_PAGE_SIZE = 2
    subscribe(subscriber, receiver.url, labels=["terror"])
    merged(publish(publisher, "acme-csam", [pdq(n, labels=["csam"]) for n in range(4)]))
    merged(publish(publisher, "acme-csam", [pdq(9, labels=["terror"])]))
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "delivered"
    assert do_dispatch() == []  # nothing new: the same page is not cut again
    (request,) = receiver.received
    assert [c["value"] for c in request.payload["data"]["changes"]] == [PDQ[9]]
    merged(publish(publisher, "acme-csam", [pdq(10, labels=["terror"])]))
    (claimed,) = do_dispatch()
    assert do_send(*claimed) == "delivered"
    assert request.payload["data"]["cursor"] == receiver.received[1].payload["data"]["from"]
