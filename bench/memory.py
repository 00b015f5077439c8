"""Memory of the web workers that hold the PDQ index: a generation of random PDQ hashes, served
by gunicorn started as ``make run`` starts it (the command is read from exchange/run.py), each
worker answering signed ``POST /api/v1/match`` batches; then every worker's USS (memory only it
holds), PSS (its share of what it maps, shared pages divided among their users) and RSS (all
it touches, shared pages whole), beside the generation's size on disk.

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/memory.py

Twice: with every entry in the generation (as compaction leaves it), then with
``BENCH_MEMORY_DELTA`` of them (default 100,000) published through the real actions after the
generation was written, so that each worker carries them in its delta (as between two
compactions under ingest). ``BENCH_MEMORY_ENTRIES`` (default 1000000, in all),
``BENCH_MEMORY_ROUNDS`` (default 8: each round sends as many 1,000-query batches at once as
there are workers, so that each serves some); the workers are as many as ``make run`` starts
(``WEB_CONCURRENCY``, default 2).
"""

import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench._common import bench_member, start_web  # noqa: E402
from hashx.auth import HashxAuth  # noqa: E402
from signals.actions.merge import do_merge_batch  # noqa: E402
from signals.actions.publish import Source, do_publish  # noqa: E402
from signals.feed.positions import Position, visible_horizon  # noqa: E402
from signals.matching.index import Generation  # noqa: E402
from signals.matching.mih import to_hex  # noqa: E402
from signals.models import HashSet  # noqa: E402

ENTRIES = int(os.environ.get("BENCH_MEMORY_ENTRIES", "1000000"))
DELTA = int(os.environ.get("BENCH_MEMORY_DELTA", "100000"))
ROUNDS = int(os.environ.get("BENCH_MEMORY_ROUNDS", "8"))
# Entry ids far above any real one: a hit on them is dropped by the database check, as a
# retracted entry's would be, so the bench needs no million rows in Postgres.
FIRST_ID = 10**12
MB = 2**20


def build(directory: Path, set_id: int, hashes: np.ndarray) -> None:
    """A generation of ``hashes`` in set ``set_id``, written as compaction writes one, at the
    feed's current horizon."""
    shutil.rmtree(directory, ignore_errors=True)
    Generation.write(
        directory,
        Position(visible_horizon(), 0),
        np.arange(FIRST_ID, FIRST_ID + len(hashes), dtype=np.int64),
        np.full(len(hashes), set_id, dtype=np.int32),
        hashes,
    )


def publish(hash_set: HashSet, hashes: np.ndarray) -> None:
    """``hashes`` published into ``hash_set`` and merged, as a member's upload would be."""
    items = ((n, {"type": "pdq", "value": v}) for n, v in enumerate(to_hex(hashes), start=1))
    batch = do_publish(hash_set, hash_set.owner, Source("line", items), queue=False)[0]
    do_merge_batch(str(batch.pk))


def batch(hashes: np.ndarray, rng: np.random.Generator) -> list[dict[str, str]]:
    """1,000 queries: 500 a few bits off indexed hashes, 500 random."""
    near = hashes[rng.integers(0, len(hashes), 500)].copy()
    near[:, 0] ^= np.uint64(0b1011)
    far = rng.integers(0, 2**64, (500, 4), dtype=np.uint64)
    return [{"type": "pdq", "value": v} for v in to_hex(np.concatenate([near, far]))]


def workers(web: psutil.Process) -> list[psutil.Process]:
    return sorted(web.children(), key=lambda p: p.pid)


def started_workers(master: psutil.Process) -> list[psutil.Process]:
    """gunicorn answers once one worker runs: wait until their number holds for a second."""
    seen, deadline = workers(master), time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1)
        now = workers(master)
        if len(now) == len(seen):
            return now
        seen = now
    return seen


def report(label: str, processes: list[psutil.Process]) -> None:
    for process in processes:
        info = process.memory_full_info()
        print(
            f"{label:<16} pid {process.pid:>7}  USS {info.uss / MB:7.0f} MB"
            f"  PSS {info.pss / MB:7.0f} MB  RSS {info.rss / MB:7.0f} MB",
            flush=True,
        )


def main() -> None:
    call_command("migrate", verbosity=0)
    key, hash_set = bench_member()
    directory = Path(settings.HASHX_MATCH_DIR).with_name("match-memory")
    started = time.perf_counter()
    hashes = np.random.default_rng(11).integers(0, 2**64, (ENTRIES, 4), dtype=np.uint64)
    build(directory, hash_set.pk, hashes[DELTA:])
    name = (directory / "CURRENT").read_text().strip()
    files = sorted((directory / name).glob("*.npy"))
    print(f"generation: {ENTRIES - DELTA} hashes, written in {time.perf_counter() - started:.1f} s")
    for file in files:
        print(f"  {file.name:<14} {file.stat().st_size / MB:8.1f} MB")
    print(f"  {'on disk':<14} {sum(f.stat().st_size for f in files) / MB:8.1f} MB")

    web, base, _ = start_web({"HASHX_MATCH_DIR": str(directory)}, as_run=True)
    try:
        master = psutil.Process(web.pid)
        report("master", [master])
        count = len(started_workers(master))
        report("worker, idle", workers(master))
        rng = np.random.default_rng(5)
        url = f"{base}/api/v1/match"
        auth = HashxAuth(key)

        def match(_: int) -> float:
            begun = time.perf_counter()
            answer = requests.post(
                url, json={"signals": batch(hashes, rng)}, auth=auth, timeout=600
            )
            answer.raise_for_status()
            assert len(answer.json()["results"]) == 1000
            return time.perf_counter() - begun

        def rounds(label: str) -> None:
            timings: list[float] = []
            with ThreadPoolExecutor(count) as pool:
                for _ in range(ROUNDS):
                    timings += pool.map(match, range(count))
            print(f"{len(timings)} batches of 1,000 queries, median {np.median(timings):.3f} s")
            report(label, workers(master))

        rounds("worker, no delta")
        if DELTA:
            started = time.perf_counter()
            publish(hash_set, hashes[:DELTA])
            print(f"{DELTA} more published in {time.perf_counter() - started:.1f} s")
            rounds(f"worker, delta {DELTA}")
    finally:
        web.terminate()
        web.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
