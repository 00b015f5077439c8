"""Webhook fan-out latency: 50 subscriptions on a loopback receiver, batches published one after
another; the time from a batch's commit until each subscription's receiver holds it.

    make bench              (BENCH_FANOUT_BATCHES=10 for a shorter run)

A real Celery worker (prefork, 2 processes) and beat run beside this process; publishing goes
through the publish and merge actions exactly as the API does (the merge on the worker). Prints
p50, p99 and the maximum over every (batch, subscription) pair.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
os.environ.update(
    {"HASHX_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8", "HASHX_WEBHOOK_ALLOW_HTTP": "1"}
)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db.models import F  # noqa: E402

from members.actions.organisations import do_create_organisation  # noqa: E402
from signals.actions.publish import do_publish  # noqa: E402
from signals.actions.sets import do_create_set  # noqa: E402
from signals.actions.subscriptions import do_create_subscription  # noqa: E402
from signals.api.uploads import json_items  # noqa: E402
from signals.feed.positions import Position, visible_horizon  # noqa: E402
from signals.models import Batch  # noqa: E402
from tests.receiver import Receiver  # noqa: E402

SUBSCRIPTIONS = 50
BATCHES = int(os.environ.get("BENCH_FANOUT_BATCHES", "30"))
PER_BATCH = 20


def main() -> None:
    call_command("migrate", verbosity=0)
    run = uuid.uuid4().hex[:8]
    owner = do_create_organisation(f"bench-{run}", "Bench publisher", active=True)
    hash_set = do_create_set(
        owner, {"slug": f"fanout-{run}", "name": "Fan-out", "distribution": "coalition"}
    )
    receiver = Receiver()
    start = Position(visible_horizon(), 0).cursor()
    for n in range(SUBSCRIPTIONS):
        member = do_create_organisation(f"sub-{run}-{n}", f"Subscriber {n}", active=True)
        do_create_subscription(
            member,
            url=f"{receiver.url}/{n}",
            sets=[hash_set],
            signal_types=[],
            labels=[],
            cursor=start,
        )
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    celery = [sys.executable, "-m", "celery", "-A", "exchange"]
    worker = subprocess.Popen(
        [*celery, "worker", "--concurrency", "2", "--loglevel", "WARNING",
         "--hostname", f"fanout-{run}@%h", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    schedule = Path(tempfile.mkdtemp()) / "beat-schedule"
    beat = subprocess.Popen(
        [*celery, "beat", "--loglevel", "WARNING", "--schedule", str(schedule)],
        cwd=ROOT,
        env=env,
    )
    published: dict[str, float] = {}
    try:
        time.sleep(5)  # worker and beat up
        for _ in range(BATCHES):
            values = [uuid.uuid4().hex * 2 for _ in range(PER_BATCH)]
            published[values[0]] = time.monotonic()
            do_publish(hash_set, owner, json_items([{"type": "pdq", "value": v} for v in values]))
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            arrived = _arrivals(receiver, published)
            if len(arrived) == BATCHES * SUBSCRIPTIONS:
                break
            time.sleep(0.5)
    finally:
        worker.terminate()
        beat.terminate()
        worker.wait()
        beat.wait()
        receiver.close()
    arrived = _arrivals(receiver, published)
    latencies = sorted(arrived.values())
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"subscriptions                   {SUBSCRIPTIONS} (one loopback receiver)")
    print(f"batches                         {BATCHES} of {PER_BATCH} new PDQ, 0.5 s apart")
    print(f"deliveries received             {len(receiver.received)} requests")
    print(f"(batch, subscription) arrivals  {len(arrived)} of {BATCHES * SUBSCRIPTIONS}")
    merges = [
        took.total_seconds()
        for took in Batch.objects.filter(hash_set=hash_set, finished_at__isnull=False)
        .annotate(took=F("finished_at") - F("created_at"))
        .values_list("took", flat=True)
    ]
    print(f"publish-to-merged p50           {statistics.median(merges) * 1000:8.0f} ms")
    print(f"publish-to-delivery p50         {p50 * 1000:8.0f} ms")
    print(f"publish-to-delivery p99         {p99 * 1000:8.0f} ms")
    print(f"publish-to-delivery max         {latencies[-1] * 1000:8.0f} ms")


def _arrivals(receiver: Receiver, published: dict[str, float]) -> dict[tuple[str, str], float]:
    """(batch marker, subscription path) → seconds from publish to its first arrival."""
    arrived: dict[tuple[str, str], float] = {}
    for request in list(receiver.received):
        for change in request.payload["data"]["changes"]:
            sent = published.get(change["value"])
            if sent is not None:
                arrived.setdefault((change["value"], request.path), request.at - sent)
    return arrived


if __name__ == "__main__":
    main()
