"""vPDQ matching: one video query against many indexed videos, through the shared PDQ index
(frames of every video, under their video's entry id) beside a brute-force scan of every frame.

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/video.py

``BENCH_VIDEO_COUNT`` (default 100000: 100,000 videos of 60 frames, 6,000,000 frame hashes;
the shared 2-core machine ran it at a reduced size, see the README), ``BENCH_VIDEO_QUERIES``
(default 20). Each video is four scenes of 15 frames; within a scene each frame is the previous
one with 4 bits flipped, and every scene starts from a random hash. Queries: half are copies of
indexed videos (every frame 0 to 12 bits away, the first 10 frames cut), half random videos.

Printed per query (median and worst): the time ``signals.actions.match.video_matches`` takes
to answer it (index search, frame hits to shares, the matched videos' own frames compared), and
the CPU time it takes (which a busy machine's other work does not add to),
beside a brute-force scan of every indexed frame (``mih.scan``, numba) grouped into the same
shares; recall of the index path against that scan (every video both shares say matches).
"""

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from signals.actions.match import Query, video_hashes, video_matches  # noqa: E402
from signals.feed.positions import Position  # noqa: E402
from signals.matching.index import Generation, View  # noqa: E402
from signals.matching.mih import U64, scan, to_hex  # noqa: E402
from signals.models import HashSet  # noqa: E402

VIDEOS = int(os.environ.get("BENCH_VIDEO_COUNT", "100000"))
QUERIES = int(os.environ.get("BENCH_VIDEO_QUERIES", "20"))
FRAMES, SCENE, DRIFT = 60, 15, 4
SET_ID = 1
rng = np.random.default_rng(21)


def flip(hashes: U64, bits: np.ndarray) -> U64:
    """Each row with ``bits[i]`` random bits flipped."""
    out = hashes.copy()
    for i, count in enumerate(bits):
        for bit in rng.choice(256, int(count), replace=False):
            out[i, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return out


def make_videos(count: int) -> U64:
    """``count`` videos of FRAMES frames: array [count, FRAMES, 4]."""
    scenes = rng.integers(0, 2**64, (count, FRAMES // SCENE, 4), dtype=np.uint64)
    frames = np.repeat(scenes, SCENE, axis=1)
    # A drift: frame j of a scene is frame j-1 with DRIFT bits flipped (cumulative XOR masks).
    masks = np.zeros((count, FRAMES, 4), np.uint64)
    bits = rng.integers(0, 256, (count, FRAMES, DRIFT))
    for d in range(DRIFT):
        word, bit = bits[:, :, d] // 64, (bits[:, :, d] % 64).astype(np.uint64)
        for w in range(4):
            masks[:, :, w] ^= np.where(word == w, np.uint64(1) << bit, np.uint64(0))
    scene_of = np.arange(FRAMES) // SCENE
    for s in range(FRAMES // SCENE):
        inside = scene_of == s
        frames[:, inside] ^= np.bitwise_xor.accumulate(masks[:, inside], axis=1)
    return frames


def value_of(frames: U64) -> str:
    return json.dumps([f"{h},100,{float(t):.3}" for t, h in enumerate(to_hex(frames))])


def main() -> None:
    started = time.perf_counter()
    videos = make_videos(VIDEOS)
    hashes = videos.reshape(-1, 4)
    entries = np.repeat(np.arange(1, VIDEOS + 1, dtype=np.int64), FRAMES)
    sets = np.full(len(entries), -SET_ID, np.int32)
    made = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="bench-video-") as folder:
        started = time.perf_counter()
        generation = Generation.write(Path(folder), Position(1, 0), entries, sets, hashes)
        built = time.perf_counter() - started
        empty = np.empty(0, np.int64), np.empty(0, np.int32), np.empty((0, 4), np.uint64)
        view = View(generation, generation.position, frozenset(), *empty)
        hash_set = HashSet(id=SET_ID, slug="bench", pdq_threshold=31)
        readable = {SET_ID: hash_set}
        # A video's own frames, as the database would give them (distinct: random drift).
        by_entry = _Frames(videos)

        def frames_of(ids: list[int]) -> dict[int, U64]:
            return {e: by_entry[e] for e in ids}

        picked = rng.choice(VIDEOS, QUERIES // 2, replace=False)
        copies = [flip(videos[i], rng.integers(0, 13, FRAMES))[10:] for i in picked]
        randoms = list(make_videos(QUERIES - len(copies)))
        query_values = [value_of(q) for q in [*copies, *randoms]]
        index_times, index_cpu, brute_times, truth, found = [], [], [], set(), set()
        for number, value in enumerate(query_values):
            query = Query("vpdq", value, None, 31)
            t0, c0 = time.perf_counter(), time.process_time()
            [matches] = video_matches(view, [query], readable, frames_of)
            index_times.append(time.perf_counter() - t0)
            index_cpu.append(time.process_time() - c0)
            found |= {(number, m.entry_id) for m in matches}
            t0 = time.perf_counter()
            truth |= {(number, e) for e in brute(hashes, entries, by_entry, video_hashes(value))}
            brute_times.append(time.perf_counter() - t0)
    hits = len(found & truth)
    print(f"{VIDEOS:,} videos x {FRAMES} frames = {len(hashes):,} frame hashes"
          f" (made in {made:.1f} s, indexed in {built:.1f} s, index arrays"
          f" {generation.mih.nbytes / 2**20:,.0f} MiB); {QUERIES} queries of 50 or 60"
          " frames")  # fmt: skip
    for name, times in (("index", index_times), ("brute-force frame scan", brute_times)):
        print(f"  {name:24s} median {statistics.median(times) * 1000:9.1f} ms"
              f"   worst {max(times) * 1000:9.1f} ms")  # fmt: skip
    print(f"  {'index, CPU time':24s} median {statistics.median(index_cpu) * 1000:9.1f} ms"
          f"   worst {max(index_cpu) * 1000:9.1f} ms")  # fmt: skip
    ratio = statistics.median(brute_times) / statistics.median(index_times)
    print(f"  index / brute force: {ratio:,.0f}x faster (median)")
    print(f"  recall vs brute force: {hits}/{len(truth)}"
          f" = {hits / max(len(truth), 1):.3f}; extra (not in brute force): {len(found - truth)};"
          f" copies matched: {len({q for q, _ in found if q < len(copies)})}/{len(copies)},"
          f" random queries matched: {len({q for q, _ in found if q >= len(copies)})}")  # fmt: skip


class _Frames:
    def __init__(self, videos: U64) -> None:
        self.videos = videos

    def __getitem__(self, entry: int) -> U64:
        return self.videos[entry - 1]


def brute(hashes: U64, entries: np.ndarray, by_entry: _Frames, query: U64) -> set[int]:
    """The videos a query matches by a scan of every indexed frame, with the reference's rule:
    80% of the query's frames within 31 of some frame of the video, 0% of the video's."""
    q, rows, _ = scan(hashes, query, 31)
    matched: dict[int, set[int]] = {}
    for qi, entry in zip(q.tolist(), entries[rows].tolist(), strict=True):
        matched.setdefault(entry, set()).add(qi)
    out = set()
    for entry, frames in matched.items():
        if 100.0 * len(frames) / len(query) >= 80:
            target = by_entry[entry]
            near = np.bitwise_count(target[:, None, :] ^ query[None, :, :]).sum(axis=2) <= 31
            if 100.0 * near.any(axis=1).sum() / len(target) >= 0:
                out.add(entry)
    return out


if __name__ == "__main__":
    main()
