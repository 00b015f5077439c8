"""PDQ matching: this exchange's index against python-threatexchange's ``PDQIndex`` (faiss
``IndexBinaryMultiHash``), on random 256-bit hashes, then a 1,000-query batch through HTTP.

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/match.py

``BENCH_MATCH_SIZES`` (default ``1000000,10000000``; the first size again with PDQ's real
regression haystack among the random hashes and its needles as queries), ``BENCH_MATCH_HTTP``
(entries behind the HTTP run, default 1000000; 0 skips it). Queries: half near-duplicates of
indexed hashes (0 to 40 bits flipped), half random. Recall is against brute force on a sample
of the queries (every hash within 31). Memory: the index's arrays for ours (what the generation
files hold); the growth of the process's resident memory while building for ``PDQIndex``.
"""

import gc
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from threatexchange.signal_type.pdq.pdq_index import PDQIndex  # noqa: E402

from bench._common import start_web  # noqa: E402
from hashx.auth import sign_headers  # noqa: E402
from hashx.keys import raw_public_bytes  # noqa: E402
from members.actions.keys import do_add_key  # noqa: E402
from members.actions.organisations import do_create_organisation  # noqa: E402
from signals.actions.merge import do_merge_batch  # noqa: E402
from signals.actions.publish import Source, do_publish  # noqa: E402
from signals.actions.sets import do_create_set  # noqa: E402
from signals.matching.index import shared_index  # noqa: E402
from signals.matching.mih import MIH, U64, brute_force, parse_hex, to_hex  # noqa: E402
from signals.models import Batch, HashSet  # noqa: E402

PDQ_DATA = ROOT.parent / "shared" / "data" / "pdq"
SIZES = [int(x) for x in os.environ.get("BENCH_MATCH_SIZES", "1000000,10000000").split(",")]
HTTP_ENTRIES = int(os.environ.get("BENCH_MATCH_HTTP", "1000000"))
QUERIES = 2000
RECALL_QUERIES = 100
rng = np.random.default_rng(7)


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def queries_for(hashes: U64, count: int) -> U64:
    """Half near-duplicates of indexed hashes (0 to 40 bits flipped), half random."""
    near = hashes[rng.integers(0, len(hashes), count // 2)].copy()
    for row in near:
        for bit in rng.choice(256, int(rng.integers(0, 41)), replace=False):
            row[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    far = rng.integers(0, 2**64, size=(count - count // 2, 4), dtype=np.uint64)
    return np.concatenate([near, far])


def rate(count: int, run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def measure(hashes: U64, queries: U64, sample: U64) -> dict[str, dict[str, float]]:
    """Both indexes over ``hashes``: ``queries`` for speed, ``sample`` for recall."""
    q, r, _ = brute_force(hashes, sample, 31)
    truth = set(zip(q.tolist(), r.tolist(), strict=True))
    rows = {"hashx MIH (numba)": ours(hashes, queries, sample, truth)}
    gc.collect()
    rows["threatexchange PDQIndex"] = theirs(hashes, queries, sample, truth)
    gc.collect()
    return rows


def ours(hashes: U64, queries: U64, sample: U64, truth: set[tuple[int, int]]) -> dict[str, float]:
    started = time.perf_counter()
    index = MIH.build(hashes)
    build = time.perf_counter() - started
    index.search(queries[:1])  # compile (or load the cached kernel)
    singles = min(QUERIES, 1000)
    q, r, _ = index.search(sample)
    found = set(zip(q.tolist(), r.tolist(), strict=True))
    return {
        "build_s": build,
        "single_qps": rate(singles, lambda: [index.search(q[None, :]) for q in queries[:singles]]),
        "batch_qps": rate(QUERIES, lambda: index.search(queries)),
        # hashes + chunk tables + offsets, plus entry ids (8) and set ids (4) per row
        "memory_mb": (index.nbytes + len(hashes) * 12) / 2**20,
        "recall": len(found & truth) / max(1, len(truth)),
        "false": len(found - truth),
    }


def theirs(hashes: U64, queries: U64, sample: U64, truth: set[tuple[int, int]]) -> dict[str, float]:
    values = to_hex(hashes)
    texts = to_hex(queries)
    before = rss()
    started = time.perf_counter()
    index = PDQIndex.build((v, i) for i, v in enumerate(values))
    build = time.perf_counter() - started
    memory = (rss() - before) / 2**20
    answers = [index.query(text) for text in to_hex(sample)]
    found = {(q, int(m.metadata)) for q, matches in enumerate(answers) for m in matches}
    singles = min(QUERIES, 1000 if len(hashes) <= 1_000_000 else 300)
    return {
        "build_s": build,
        "single_qps": rate(singles, lambda: [index.query(t) for t in texts[:singles]]),
        "batch_qps": rate(QUERIES, lambda: index.index.search_with_distance_in_result(texts, 31)),
        "memory_mb": memory,
        "recall": len(found & truth) / max(1, len(truth)),
        "false": len(found - truth),
    }


def http_batch(entries: int) -> list[float]:
    """Seconds per signed POST /api/v1/match of 1,000 PDQ queries against ``entries`` entries,
    through gunicorn (one sync worker); the first request (index load) is not counted."""
    call_command("migrate", verbosity=0)
    slug = f"bench-match-{entries}"
    hash_set = HashSet.objects.filter(slug=slug).first()
    key = Ed25519PrivateKey.generate()
    fresh = np.random.default_rng()  # not the seeded stream: the queries must be new hashes
    if hash_set is None:
        org = do_create_organisation(f"bench-{uuid.uuid4().hex[:8]}", "Bench", active=True)
        hash_set = do_create_set(org, {"slug": slug, "name": "Bench match"})
        values = to_hex(fresh.integers(0, 2**64, (entries, 4), dtype=np.uint64))
        items = ((n, {"type": "pdq", "value": v}) for n, v in enumerate(values, start=1))
        do_publish(hash_set, org, Source("line", items), queue=False)
    for batch_id in (
        Batch.objects.filter(hash_set=hash_set)
        .exclude(state=Batch.State.DONE)
        .values_list("pk", flat=True)
    ):
        do_merge_batch(str(batch_id))  # also finishes a merge an interrupted run left
    do_add_key(hash_set.owner, raw_public_bytes(key.public_key()))
    values = list(hash_set.entries.values_list("value", flat=True)[:500])
    near = [v[:-2] + ("00" if v[-2:] != "00" else "ff") for v in values]  # a few bits off
    far = to_hex(fresh.integers(0, 2**64, (1000 - len(near), 4), dtype=np.uint64))
    body = {"signals": [{"type": "pdq", "value": v} for v in near + far]}

    # As beat's compaction leaves it: one generation holding every entry, no delta.
    match_dir = str(Path(settings.HASHX_MATCH_DIR).with_name("match-bench"))
    settings.HASHX_MATCH_DIR = Path(match_dir)
    shared_index().compact()

    web, base, _ = start_web({"HASHX_MATCH_DIR": match_dir})
    try:
        url = f"{base}/api/v1/match"
        timings = []
        for attempt in range(6):
            data = json.dumps(body).encode()
            headers = {**sign_headers(key, "POST", url, data), "Content-Type": "application/json"}
            started = time.perf_counter()
            answer = requests.post(url, data=data, headers=headers, timeout=600)
            answer.raise_for_status()
            if attempt:
                timings.append(time.perf_counter() - started)
        hits = sum(len(r["matches"]) for r in answer.json()["results"])
        print(f"HTTP: {hits} matches for 1,000 queries (500 near, 500 random)")
    finally:
        web.terminate()
        web.wait()
    return timings


def report(label: str, rows: dict[str, dict[str, float]]) -> None:
    for name, row in rows.items():
        print(f"{label:>12} {name:<26} {row['build_s']:>8.1f} {row['single_qps']:>11.0f}"
              f" {row['batch_qps']:>10.0f} {row['memory_mb']:>10.0f} {row['recall']:>7.3f}"
              f" {row['false']:>7.0f}", flush=True)  # fmt: skip


def read_hashes(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    print(f"{'size':>12} {'index':<26} {'build s':>8} {'single q/s':>11} {'batch q/s':>10}"
          f" {'memory MB':>10} {'recall':>7} {'false+':>7}")  # fmt: skip
    for size in SIZES:
        hashes = rng.integers(0, 2**64, size=(size, 4), dtype=np.uint64)
        queries = queries_for(hashes, QUERIES)
        sample = np.concatenate([queries[: RECALL_QUERIES // 2], queries[-RECALL_QUERIES // 2 :]])
        report(f"{size}", measure(hashes, queries, sample))
        del hashes
    # Real hashes: PDQ's regression haystack among random ones, its needles as queries.
    haystack = parse_hex(read_hashes(PDQ_DATA / "haystack.txt"))
    needles = parse_hex(read_hashes(PDQ_DATA / "needles.txt"))
    size = SIZES[0]
    padding = rng.integers(0, 2**64, (size - len(haystack), 4), dtype=np.uint64)
    tiled = np.tile(needles, (QUERIES // len(needles), 1))
    report(f"{size}+real", measure(np.concatenate([haystack, padding]), tiled, needles))
    if HTTP_ENTRIES:
        timings = http_batch(HTTP_ENTRIES)
        print(
            f"HTTP POST /api/v1/match, 1,000 PDQ queries against {HTTP_ENTRIES} entries:"
            f" median {statistics.median(timings):.3f} s, best {min(timings):.3f} s"
            f" over {len(timings)} requests"
        )


if __name__ == "__main__":
    main()
