"""The first 1,000-query PDQ match after a burst of ingest, and warm ones, through HTTP.

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/match_first.py

``BENCH_MATCH_BURST`` (default 1000000): new PDQ hashes ingested through the real path
(``do_publish`` staging, then ``do_merge_batch``, in this process) while a gunicorn (one sync
worker) serves the index from the generation it had before. Then, each a signed POST
/api/v1/match of 1,000 queries (500 a few bits off the burst's hashes, 500 random):

1. the first batch after the ingest: the web process leaves the burst to a compaction
   (``Index._defer_burst``) and answers from its view (the burst is not in it yet);
2. the compaction, as a worker runs it, here in this process: reads the burst from the feed
   once (one statement) and writes a generation (wall and CPU seconds);
3. the first batch after that: the web process opens the new generation (memory-mapped, page
   faults included) and follows what is left of the feed;
4. warm batches (min and median of 5).

Also, in this process (no HTTP): a follower that reads the burst itself (what a query's refresh
paid before: now only after ``BURST_WAIT_SECONDS`` without a compaction) and then searches
1,000 queries; and the generation's bytes per hash (its files over its entries).
Seconds are wall time unless labelled CPU; the machine may be shared: figures are one run.
"""

import json
import os
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench._common import bench_member, start_web  # noqa: E402
from hashx.auth import sign_headers  # noqa: E402
from signals.actions.merge import do_merge_batch  # noqa: E402
from signals.actions.publish import Source, do_publish  # noqa: E402
from signals.matching.index import Index  # noqa: E402
from signals.matching.mih import parse_hex, to_hex  # noqa: E402

BURST = int(os.environ.get("BENCH_MATCH_BURST", "1000000"))


def timed(run):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    call_command("migrate", verbosity=0)
    key, hash_set = bench_member()
    directory = Path(settings.HASHX_MATCH_DIR).with_name(f"match-first-{uuid.uuid4().hex[:8]}")
    reader_dir = directory.with_name(directory.name + "-reader")
    settings.HASHX_MATCH_DIR = directory
    (_, seconds, _) = timed(lambda: Index(directory).view(max_age=0))
    before = Index(directory).view(max_age=0).generation
    print(f"generation before the burst: {len(before.entries):,} entries ({seconds:.1f} s)")
    reader = Index(reader_dir)
    reader.view(max_age=0)

    rng = np.random.default_rng()
    hashes = rng.integers(0, 2**64, (BURST, 4), dtype=np.uint64)
    near = hashes[rng.choice(BURST, 500, replace=False)].copy()
    near[:, 0] ^= np.uint64(0b1011)  # 3 bits off
    queries = np.concatenate([near, rng.integers(0, 2**64, (500, 4), dtype=np.uint64)])
    body = json.dumps({"signals": [{"type": "pdq", "value": v} for v in to_hex(queries)]})

    web, base, _ = start_web({"HASHX_MATCH_DIR": str(directory)})
    try:
        url = f"{base}/api/v1/match"

        def batch() -> tuple[int, float]:
            data = body.encode()
            headers = {**sign_headers(key, "POST", url, data), "Content-Type": "application/json"}
            started = time.perf_counter()
            answer = requests.post(url, data=data, headers=headers, timeout=600)
            seconds = time.perf_counter() - started
            answer.raise_for_status()
            return sum(len(r["matches"]) for r in answer.json()["results"]), seconds

        batch()  # the web process loads the index (and numba's cached kernels)
        warm_before = min(batch()[1] for _ in range(3))
        print(f"warm batch before the burst: {warm_before:.3f} s (min of 3)")

        values = to_hex(hashes)
        items = ((n, {"type": "pdq", "value": v}) for n, v in enumerate(values, start=1))
        started = time.perf_counter()
        published, _ = do_publish(hash_set, hash_set.owner, Source("line", items), queue=False)
        do_merge_batch(str(published.pk))
        print(f"ingest of {BURST:,} new PDQ hashes (staging + merge): "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip

        found, seconds = batch()
        print(f"1. first batch after the ingest (burst left to the compaction): {seconds:.3f} s,"
              f" {found} matches (the burst not yet in)")  # fmt: skip

        generation, wall, cpu = timed(lambda: Index(directory).compact())
        assert generation is not None
        files = sum(f.stat().st_size for f in (directory / generation.name).iterdir())
        print(f"2. compaction (a worker's, off the query path): {wall:.1f} s ({cpu:.1f} s CPU);"
              f" generation of {len(generation.entries):,} entries,"
              f" {files / len(generation.entries):.1f} bytes per hash")  # fmt: skip

        found, seconds = batch()
        print(f"3. first batch after the compaction (new generation opened): {seconds:.3f} s,"
              f" {found} matches")  # fmt: skip
        warm = [batch()[1] for _ in range(5)]
        print(f"4. warm batch: min {min(warm):.3f} s, median {statistics.median(warm):.3f} s")
    finally:
        web.terminate()
        web.wait()

    view, wall, cpu = timed(lambda: reader.view(max_age=0))
    print(f"a follower reading the burst itself (one statement, then a delta index of"
          f" {len(view.added_entries):,}): {wall:.2f} s ({cpu:.2f} s CPU)")  # fmt: skip
    hits, wall, cpu = timed(lambda: view.search(parse_hex(to_hex(queries))))
    print(f"  then its 1,000-query search: {wall:.3f} s ({cpu:.3f} s CPU), {len(hits)} hits")
    for path in (directory, reader_dir):
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
