"""The PDQ multi-index against brute force: random, adversarial and real hashes, in every bucket
layout (each chunk's directory dense, or its buckets leaving out up to 8 low bits)."""

import numpy as np
import pytest

from signals.feed.positions import Position
from signals.matching.index import Generation
from signals.matching.mih import (
    CHUNKS,
    MAX_SHIFT,
    MIH,
    STARTS,
    WIDTHS,
    brute_force,
    chunk_radii,
    parse_hex,
    to_hex,
)
from tests.signals.conftest import PDQ

rng = np.random.default_rng(20261128)


# None: what MIH.build chooses for the number of hashes; then all dense, all shifted as far as
# they go, and mixed.
LAYOUTS = {
    "chosen": None,
    "dense": [0] * CHUNKS,
    "shifted": [MAX_SHIFT] * CHUNKS,
    "mixed": [2, 0, 5, 8, 1, 0, 3, 8, 7, 0, 4, 6],
}
layouts = pytest.mark.parametrize("shifts", LAYOUTS.values(), ids=LAYOUTS.keys())


def random_hashes(n):
    return rng.integers(0, 2**64, size=(n, 4), dtype=np.uint64)


def flipped(hashes, bits_per_row):
    """Copies of ``hashes`` with the given number of distinct random bits flipped in each."""
    out = hashes.copy()
    for row, count in enumerate(bits_per_row):
        for bit in rng.choice(256, int(count), replace=False):
            out[row, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return out


def flip_bits(hash_row, bits):
    out = hash_row.copy()
    for bit in bits:
        out[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return out


def same(a, b):
    return set(zip(*[x.tolist() for x in a], strict=True)) == set(
        zip(*[x.tolist() for x in b], strict=True)
    )


@layouts
def test_it_finds_exactly_what_brute_force_finds_on_random_hashes(shifts):
    hashes = random_hashes(50_000)
    index = MIH.build(hashes, shifts)
    picks = rng.integers(0, len(hashes), 400)
    queries = np.concatenate(
        [flipped(hashes[picks], rng.integers(0, 48, len(picks))), random_hashes(100)]
    )
    found = index.search(queries, 31)
    assert same(found, brute_force(hashes, queries, 31))
    assert len(found[0]) > 200  # the near-duplicates within 31 were there to be found


@layouts
def test_a_batch_of_several_blocks_of_queries_is_exact(shifts):
    """Big batches are searched a block of queries at a time (each step sorted by the memory
    it reads), split across cores; small ones one query after the other: the same answers."""
    hashes = random_hashes(20_000)
    picks = rng.integers(0, len(hashes), 2_000)
    queries = np.concatenate(
        [flipped(hashes[picks], rng.integers(0, 40, len(picks))), random_hashes(500)]
    )
    index = MIH.build(hashes, shifts)
    found = index.search(queries, 31)
    assert same(found, brute_force(hashes, queries, 31))
    assert len(found[0]) > 1_000
    one_by_one = [index.search(queries[i : i + 1], 31) for i in range(0, 200)]
    some = (
        np.concatenate([q + i for i, (q, _, _) in enumerate(one_by_one)]),
        np.concatenate([r for _, r, _ in one_by_one]),
        np.concatenate([d for _, _, d in one_by_one]),
    )
    assert same(some, index.search(queries[:200], 31))


@layouts
@pytest.mark.parametrize("radius", [0, 1, 10, 15, 16, 20, 30, 31])
def test_every_radius_up_to_31_is_exact(radius, shifts):
    hashes = random_hashes(5_000)
    queries = flipped(hashes[:300], rng.integers(0, 40, 300))
    index = MIH.build(hashes, shifts)
    assert same(index.search(queries, radius), brute_force(hashes, queries, radius))


def test_hashes_at_distance_exactly_31_match_and_at_32_do_not():
    query = random_hashes(1)[0]
    at_31, at_32 = [], []
    for _ in range(300):
        at_31.append(flip_bits(query, rng.choice(256, 31, replace=False)))
        at_32.append(flip_bits(query, rng.choice(256, 32, replace=False)))
    # The pigeonhole's edge: 15 chunks two bits off and one chunk one bit off (31), and every
    # chunk exactly two bits off (32): only a one-bit probe of the right chunk finds the first.
    for chunk in range(16):
        bits = [c * 16 + b for c in range(16) for b in ((0, 9) if c != chunk else (5,))]
        at_31.append(flip_bits(query, bits))
        at_32.append(flip_bits(query, [c * 16 + b for c in range(16) for b in (3, 12)]))
    # And all the difference piled into a few chunks.
    at_31.append(flip_bits(query, range(31)))
    at_32.append(flip_bits(query, range(100, 132)))
    hashes = np.concatenate([np.array(at_31), np.array(at_32), random_hashes(10_000)])
    q, rows, d = MIH.build(hashes).search(query[None, :], 31)
    assert sorted(rows.tolist()) == list(range(len(at_31)))
    assert set(d.tolist()) == {31}
    assert same((q, rows, d), brute_force(hashes, query[None, :], 31))


@layouts
@pytest.mark.parametrize("end", ["low", "high"])
def test_the_pigeonhole_edge_of_every_chunk_is_found(shifts, end):
    """Each chunk exactly one bit past its radius except chunk ``j``, which is at its radius:
    distance 31, reachable only through chunk ``j``'s outermost buckets. One bit more in chunk
    ``j`` makes 32: never found. The bits flipped are a chunk's lowest (those a shifted bucket
    leaves to ``low``) or its highest (those that choose the bucket)."""
    radii = chunk_radii(31)
    query = random_hashes(1)[0]

    def bit(k, b):  # the b-th lowest or highest bit of chunk k
        return int(STARTS[k]) + (b if end == "low" else int(WIDTHS[k]) - 1 - b)

    found_at, beyond = [], []
    for j in range(len(WIDTHS)):
        bits = [bit(k, b) for k in range(len(WIDTHS))
                for b in range(int(radii[k]) + (0 if k == j else 1))]  # fmt: skip
        found_at.append(flip_bits(query, bits))
        beyond.append(flip_bits(query, [*bits, bit(j, int(WIDTHS[j]) - 1)]))
    hashes = np.concatenate([np.array(found_at + beyond), random_hashes(3_000)])
    _, rows, d = MIH.build(hashes, shifts).search(query[None, :], 31)
    assert sorted(rows.tolist()) == list(range(len(WIDTHS)))
    assert set(d.tolist()) == {31}


@layouts
def test_clusters_of_near_identical_hashes_are_all_found_once(shifts):
    centres = random_hashes(20)
    cluster = np.concatenate([flipped(np.repeat(centres, 200, axis=0), rng.integers(0, 4, 4000))])
    hashes = np.concatenate([cluster, cluster[:500], random_hashes(5_000)])  # exact copies too
    queries = flipped(centres, rng.integers(0, 20, len(centres)))
    found = MIH.build(hashes, shifts).search(queries, 31)
    assert same(found, brute_force(hashes, queries, 31))
    pairs = list(zip(found[0].tolist(), found[1].tolist(), strict=True))
    assert len(pairs) == len(set(pairs))


def test_it_is_exact_on_the_real_hashes_of_the_haystack():
    hashes = parse_hex(PDQ)
    queries = np.concatenate([flipped(hashes[::5], rng.integers(0, 40, len(hashes[::5])))])
    found = MIH.build(hashes).search(queries, 31)
    assert same(found, brute_force(hashes, queries, 31))
    assert to_hex(hashes[:3]) == PDQ[:3]


@layouts
def test_an_empty_index_finds_nothing(shifts):
    q, rows, d = MIH.build(np.empty((0, 4), np.uint64), shifts).search(random_hashes(3), 31)
    assert len(q) == len(rows) == len(d) == 0


@pytest.mark.parametrize("count", [0, 5_000, 100_000, 1_000_000])
def test_an_index_costs_what_its_hashes_need_not_a_fixed_128_mib(count):
    """32 bytes of hash and 48 of row numbers (with the low bits their buckets leave out) per
    hash, and bucket directories of at most 8 bytes per hash (dense ones cost 128 MiB however
    few the hashes: a small index, a process's delta, cost those 128 MiB too)."""
    index = MIH.build(random_hashes(count))
    held = sum(value.nbytes for value in vars(index).values())
    assert held <= 88 * count + 2**20, held / 2**20


def test_a_generation_opens_every_array_it_searches_mapped_read_only(tmp_path):
    """Every array a query reads is in the generation's files, and opening it maps them
    read-only and derives nothing: the processes of a host share one copy in the page cache,
    none holds a copy of its own."""
    hashes = random_hashes(20_000)
    ids = np.arange(len(hashes), dtype=np.int64)
    Generation.write(tmp_path, Position(5, 0), ids, np.zeros(len(hashes), np.int32), hashes)
    opened = Generation.open(tmp_path, (tmp_path / "CURRENT").read_text())
    arrays = {"entries": opened.entries, "sets": opened.sets}
    arrays |= {name: getattr(opened.mih, name) for name in MIH.ARRAYS}
    assert set(arrays) == set(Generation.FILES)
    for name, array in arrays.items():
        assert isinstance(array, np.memmap) and not array.flags.writeable, name
    queries = flipped(hashes[:200], rng.integers(0, 40, 200))
    assert same(opened.mih.search(queries, 31), brute_force(hashes, queries, 31))


def test_a_bad_layout_is_refused():
    with pytest.raises(ValueError, match="shifts"):
        MIH.build(random_hashes(10), [9] * CHUNKS)
