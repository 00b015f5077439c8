"""Webhook fan-out latency: ``BENCH_FANOUT_SUBSCRIPTIONS`` subscriptions (500) of as many member
organisations on one loopback receiver (keep-alive, as most receivers are), batches published
one after another; the time from a batch's publish until each subscription's receiver holds it.

    make bench              (BENCH_FANOUT_BATCHES=10 for a shorter run)

The worker runs beside this process exactly as ``make run`` starts it (exchange/run.py), and
beat with it; publishing goes through the publish and merge actions exactly as the API
does (the merge on the worker). Bounded: half a second a batch, then at most a minute for the
last deliveries. Prints p50, p95, p99 and the maximum over every (batch, subscription) pair
against issue 20's goal (p99 < 500 ms), and the worker's CPU time per delivery.
"""

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
os.environ.update(
    {"HASHX_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8", "HASHX_WEBHOOK_ALLOW_HTTP": "1"}
)

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db.models import F  # noqa: E402

from exchange.run import children  # noqa: E402
from members.actions.organisations import do_create_organisation  # noqa: E402
from signals.actions.publish import do_publish  # noqa: E402
from signals.actions.sets import do_create_set  # noqa: E402
from signals.actions.subscriptions import do_create_subscription  # noqa: E402
from signals.api.uploads import json_items  # noqa: E402
from signals.feed.positions import Position, visible_horizon  # noqa: E402
from signals.models import Batch, Delivery, Subscription  # noqa: E402

SUBSCRIPTIONS = int(os.environ.get("BENCH_FANOUT_SUBSCRIPTIONS", "500"))
BATCHES = int(os.environ.get("BENCH_FANOUT_BATCHES", "30"))
PER_BATCH = 20
GOAL_P99 = 0.5  # seconds (issue 20)


@dataclass
class Received:
    path: str
    body: bytes
    at: float

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Every subscription's endpoint, on one loopback port: HTTP/1.1 with keep-alive, each
    request answered 200 at once and recorded with the time it arrived. Lean (asyncio, in a
    thread of this process) so that what is measured is the exchange, not a Python web server:
    tests/receiver.py's threaded server costs more than a millisecond a request."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=1024)
            ready.set()
            with contextlib.suppress(asyncio.CancelledError):  # closed
                await self.server.serve_forever()

        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(serve(),), daemon=True
        )
        self.thread.start()
        ready.wait()
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(lines[0].split(" ")[1], body, time.monotonic()))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)


class Arrivals:
    """(batch marker, subscription path) → seconds from publish to its first arrival, read
    from the receiver's requests as they come (each parsed once)."""

    def __init__(self, receiver: Receiver, published: dict[str, float]) -> None:
        self.receiver, self.published = receiver, published
        self.seen = 0
        self.latency: dict[tuple[str, str], float] = {}

    def update(self) -> int:
        requests = self.receiver.received[self.seen :]
        self.seen += len(requests)
        for request in requests:
            for change in request.payload["data"]["changes"]:
                sent = self.published.get(change["value"])
                if sent is not None:
                    self.latency.setdefault((change["value"], request.path), request.at - sent)
        return len(self.latency)


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
    (worker_child,) = [c for c in children(0) if c.name == "worker"]
    worker = subprocess.Popen(worker_child.argv, cwd=ROOT, env=env)
    schedule = Path(tempfile.mkdtemp()) / "beat-schedule"
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "exchange", "beat", "--loglevel", "WARNING",
         "--schedule", str(schedule)],
        cwd=ROOT, env=env,
    )  # fmt: skip
    published: dict[str, float] = {}
    arrivals = Arrivals(receiver, published)
    try:
        time.sleep(8)  # worker and beat up
        cpu_before = _cpu(worker.pid)
        for _ in range(BATCHES):
            values = [uuid.uuid4().hex * 2 for _ in range(PER_BATCH)]
            published[values[0]] = time.monotonic()
            do_publish(hash_set, owner, json_items([{"type": "pdq", "value": v} for v in values]))
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and arrivals.update() < BATCHES * SUBSCRIPTIONS:
            time.sleep(0.5)
        worker_cpu = _cpu(worker.pid) - cpu_before
    finally:
        worker.terminate()
        beat.terminate()
        worker.wait()
        beat.wait()
        receiver.close()
    arrivals.update()
    latencies = sorted(arrivals.latency.values())
    delivered = Delivery.objects.filter(
        subscription__organisation__slug__startswith=f"sub-{run}-", state="delivered"
    ).count()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    merges = [
        took.total_seconds()
        for took in Batch.objects.filter(hash_set=hash_set, finished_at__isnull=False)
        .annotate(took=F("finished_at") - F("created_at"))
        .values_list("took", flat=True)
    ]
    p99 = pct(0.99)
    # Gone, so that the next run on the same var/ does not cut pages past them.
    Subscription.objects.filter(organisation__slug__startswith=f"sub-{run}-").delete()
    print(f"subscriptions                   {SUBSCRIPTIONS} (one loopback receiver, keep-alive)")
    print(f"batches                         {BATCHES} of {PER_BATCH} new PDQ, 0.5 s apart")
    print(f"deliveries made                 {delivered} ({len(receiver.received)} requests)")
    print(f"(batch, subscription) arrivals  {len(latencies)} of {BATCHES * SUBSCRIPTIONS}")
    print(f"publish-to-merged p50           {statistics.median(merges) * 1000:8.0f} ms")
    print(f"publish-to-delivery p50         {pct(0.5):8.0f} ms")
    print(f"publish-to-delivery p95         {pct(0.95):8.0f} ms")
    print(f"publish-to-delivery p99         {p99:8.0f} ms")
    print(f"publish-to-delivery max         {latencies[-1] * 1000:8.0f} ms")
    verdict = (
        "met" if p99 < GOAL_P99 * 1000 and len(latencies) == BATCHES * SUBSCRIPTIONS else "NOT met"
    )
    print(f"goal p99 < {GOAL_P99 * 1000:.0f} ms                  {verdict}")
    print(f"worker CPU per delivery         {worker_cpu / max(delivered, 1) * 1000:8.2f} ms"
          f" ({worker_cpu:.1f} s, all processes)")  # fmt: skip
    print(f"load average                    {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _cpu(pid: int) -> float:
    """User and system CPU seconds of a process and its children (the worker's pool)."""
    process = psutil.Process(pid)
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        times = each.cpu_times()
        total += times.user + times.system
    return total


if __name__ == "__main__":
    main()
