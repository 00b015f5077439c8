"""Federation throughput and lag: N new entries mirrored from exchange A to exchange B, beside
this machine's ingest rate for the same N new signals measured in the same run; then the lag
from a publish at A to visible at B with push-assist.

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/federation.py

``BENCH_FEDERATION_ENTRIES`` (default 1,000,000; the shared CI machine runs it at 50,000).
Both exchanges are real processes (gunicorn as `make run` serves it, a Celery worker each),
each on its own database and Redis database, as tests/federation/exchanges.py starts them.

- ingest: a signed NDJSON upload of N new md5 signals into a set at A, until the batch is
  merged (every entry positioned).
- mirror: `manage.py pull_peers a` at B, streaming A's feed of that set (signed), applying it
  checkpoint by checkpoint into B's mirror; its process start is measured apart (a pull with
  nothing new) and taken out.
- lag: 10 new signals published at A until all are visible in B's database, pulled by B's
  worker on A's webhook (push-assist); the median of 5 tries.
"""

import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from tests.federation.exchanges import Exchange, exchanges  # noqa: E402

ENTRIES = int(os.environ.get("BENCH_FEDERATION_ENTRIES", "1000000"))
LAG_TRIES = 5


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        exchanges(
            ["a", "b"], Path(tmp), workers={"a": "ingest,default,webhooks", "b": "federation"}
        ) as found,
    ):
        a, b = found["a"], found["b"]
        acme = a.member("acme", Path(tmp))
        acme.create_set("shared", "Shared", tlp="green", distribution="federated")
        Exchange.peer_all([(a, b), (b, a)])

        upload = Path(tmp) / "signals.ndjson"
        with upload.open("w") as out:
            for _ in range(ENTRIES):
                out.write(f'{{"type":"md5","value":"{secrets.token_hex(16)}"}}\n')
        started = time.perf_counter()
        batch = acme.publish_file("shared", str(upload), "application/x-ndjson")
        done = acme.wait_for_batch(batch["batch"], poll=0.1)
        ingest = time.perf_counter() - started
        assert done["new"] == ENTRIES, done

        started = time.perf_counter()
        b.pull("a")
        pulled = time.perf_counter() - started
        started = time.perf_counter()
        b.pull("a")  # nothing new: what a process start, identity check and listing cost
        idle = time.perf_counter() - started
        (mirrored,) = b.sql("SELECT count(*) FROM signals_setentry WHERE state = 'active'")[0]
        assert mirrored == ENTRIES, mirrored
        mirror = max(pulled - idle, 1e-3)

        lags = []
        for _ in range(LAG_TRIES):
            values = [secrets.token_hex(16) for _ in range(10)]
            started = time.perf_counter()
            acme.publish("shared", [{"type": "md5", "value": v} for v in values])
            while len(b.active_entries(values)) < len(values):
                if time.perf_counter() - started > 120:
                    raise SystemExit("push-assist: not at B after 120 s")
                time.sleep(0.02)
            lags.append(time.perf_counter() - started)

    ingest_rate, mirror_rate = ENTRIES / ingest, ENTRIES / mirror
    print(f"entries: {ENTRIES:,}")
    print(f"ingest at A (new signals, upload to merged): {ingest_rate:,.0f}/s ({ingest:.1f} s)")
    print(f"mirror A→B (pull_peers, less {idle:.1f} s of process start): {mirror_rate:,.0f}/s"
          f" ({mirror:.1f} s)")  # fmt: skip
    print(f"mirror / ingest: {mirror_rate / ingest_rate:.2f} (goal: at least 0.5)")
    print(f"publish at A → visible at B with push-assist, 10 signals: median"
          f" {statistics.median(lags):.2f} s, max {max(lags):.2f} s (goal: under 2 s)")  # fmt: skip


if __name__ == "__main__":
    main()
