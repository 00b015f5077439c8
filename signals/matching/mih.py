"""Exact PDQ search within Hamming radius 31 by multi-index hashing (numpy + a numba kernel).

A PDQ hash is 256 bits, kept as four native ``uint64`` words, and indexed as 12 chunks: four of
22 bits and eight of 21. Give each chunk ``k`` a radius ``r_k`` such that the ``r_k + 1`` add up
to more than the search radius ``r`` (for ``r = 31``: 1 for the 22-bit chunks, 2 for the 21-bit
ones, 4 x 2 + 8 x 3 = 32). Two hashes at distance ``d <= r`` are then within ``r_k`` bits of
each other in at least one chunk (pigeonhole: were every chunk at least ``r_k + 1`` bits apart,
``d`` would be at least 32). So every hash within the radius sits, for some chunk, in a bucket
at most ``r_k`` bits from the query's chunk value: 4 x 23 + 8 x 232 = 1,948 buckets to read at
radius 31 (12 at radius 11 or less), whose members are verified by popcount. No false
negatives, by construction.

Measured (bench/match.py and the prototypes before it): a pure-numpy verification with 16
chunks of 16 bits (272 buckets, ranges gathered with ``np.repeat``, then ``np.bitwise_count``)
reached ~1,200 single queries/s at 1M; the same 16 x 16 scan as a numba kernel ~4,000/s at 1M
and ~530/s at 10M, where it verifies ~41,000 random candidates per query; these 12 longer
chunks read more buckets but verify ~9,000 candidates at 10M, ~1,260 queries/s there.

Layout (``MIH``), all plain arrays so a generation can live in ``.npy`` files and be memory-mapped
read-only by every process, with nothing built when it is opened:

- ``hashes``  uint64[n, 4]: the hashes, row ``i`` is hash ``i``;
- ``rows``    uint32[12, n]: per chunk, row numbers grouped by that chunk's bucket (counting
  sort), each with the low bits of its chunk value that its bucket leaves out above the row
  number's ``row_bits(n)`` bits;
- ``offsets`` int32: per chunk, one after the other, where each bucket starts in ``rows``;
- ``shifts``  int64[12]: per chunk, how many low bits of the chunk value a bucket leaves out.

A chunk's bucket is its value without its ``shift`` low bits, so its directory has
``2^(width - shift) + 1`` entries. Dense directories (no shift) cost 128 MiB for the 12 chunks
whatever the number of hashes. ``choose_shifts`` leaves out as many low bits as keep the 12
directories within 8 bytes per hash (about 4 to 8 hashes per bucket). A query reads once each
bucket within the chunk's radius of its own (in the high bits), and verifies those members
whose low bits lie within what the radius leaves.

Speed: a query alone waits on memory at every step (the bucket, its members, each candidate's
hash: all at random in arrays much larger than the caches). A batch is searched 512 queries at
a time, each step over all of them sorted by the memory it reads (``_search``): measured at 1M
on one core, 1,000 queries in 65 ms (dense directories: 84; one query after the other, as
before: 100 dense, 220 with these directories).

Memory: 32 (hash) + 48 (rows) bytes per hash, plus at most 8 of directories: 86 bytes per hash at
1M (the generation adds 12 of entry and set ids).
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np
import numpy.typing as npt

WIDTHS = np.array([22] * 4 + [21] * 8, dtype=np.int64)
STARTS = np.concatenate([[0], np.cumsum(WIDTHS)[:-1]]).astype(np.int64)
CHUNKS = len(WIDTHS)
MAX_RADIUS = 31
# Named in every generation written: one of another layout is never read with this code.
LAYOUT = "mih-4x22-8x21-packed"
# The most low bits a bucket may leave out (a byte's: what a probe holds of the query's).
MAX_SHIFT = 8
# Batches of at least this many queries per core are split across cores (up to _THREADS).
PARALLEL_FROM = 64
_THREADS = min(4, os.cpu_count() or 1)
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(_THREADS, thread_name_prefix="mih")
        return _executor


# Queries searched together (``_search``; at most 1,024: a probe holds 10 bits of query), whose
# steps are each sorted by the memory they read into 2**SORT_BINS_BITS blocks at most (of 16
# rows, 512 bytes of hashes, up to 2**20 hashes), when they are at least SORT_FROM (fewer read
# too little to share memory: sorting would cost more than it saves).
QUERY_BLOCK = 512
SORT_FROM = 16
SORT_BINS_BITS = 16
# Pairs compared per block by brute_force: bounds its temporary arrays.
BLOCK_CANDIDATES = 2_000_000

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U32 = npt.NDArray[np.uint32]


def parse_hex(values: list[str]) -> U64:
    """Canonical 64-digit hex PDQ values as a (n, 4) uint64 array (one ``fromhex`` for all)."""
    raw = bytes.fromhex("".join(values))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 4)


def to_hex(hashes: U64) -> list[str]:
    raw = np.ascontiguousarray(hashes, dtype=">u8").tobytes().hex()
    return [raw[i : i + 64] for i in range(0, len(raw), 64)]


def chunk_radii(radius: int) -> npt.NDArray[np.int64]:
    """Per-chunk radii whose ``r_k + 1`` add up to more than ``radius``: every chunk starts at
    0, then the 21-bit chunks are raised first (their buckets are cheaper to enumerate)."""
    radii = np.zeros(CHUNKS, dtype=np.int64)
    order = [*range(4, CHUNKS), *range(4)]
    for step in range(max(0, radius + 1 - CHUNKS)):
        radii[order[step % CHUNKS]] += 1
    return radii


def choose_shifts(n: int) -> I64:
    """Per chunk, how many low bits of its value its buckets leave out for ``n`` hashes: as many
    as keep its directory within ``n / 6`` buckets (4 bytes each: the 12 directories cost at
    most 8 bytes per hash), up to ``MAX_SHIFT`` and what a ``rows`` entry leaves above the row
    number; about 4 to 8 hashes per bucket. A query then reads fewer, fuller buckets and filters
    their members by their low bits (measured at 1M: faster than dense directories too)."""
    bucket_bits = max(0, (n // 6).bit_length() - 1)
    most = min(MAX_SHIFT, 32 - row_bits(n))
    return np.clip(WIDTHS - bucket_bits, 0, most).astype(np.int64)


def _layout(shifts: I64) -> tuple[I64, int]:
    """What the kernels need to find each chunk, as one int64[4, CHUNKS] array: its first bit,
    its width, its shift and where its directory begins in ``offsets``; and the size of
    ``offsets``."""
    sizes = (1 << (WIDTHS - shifts)) + 1
    bases = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.stack([STARTS, WIDTHS, shifts, bases]).astype(np.int64), int(sizes.sum())


def row_bits(n: int) -> int:
    """Bits of a row number among ``n`` hashes; the rest of a ``rows`` entry's 32 hold low bits."""
    return max(1, (n - 1).bit_length())


@dataclass(frozen=True)
class MIH:
    hashes: U64
    rows: U32
    offsets: I32
    shifts: I64

    # The arrays a query reads, by field name: what a generation holds.
    ARRAYS = ("hashes", "rows", "offsets", "shifts")

    @classmethod
    def build(cls, hashes: U64, shifts: I64 | None = None) -> "MIH":
        """Index ``hashes`` (rows keep their order). One counting sort per chunk: O(n).
        ``shifts``: other than ``choose_shifts``' (tests try every layout)."""
        hashes = np.ascontiguousarray(hashes, dtype=np.uint64).reshape(-1, 4)
        if len(hashes) >= 2**31:
            raise ValueError("at most 2**31 - 1 hashes per index")
        if shifts is None:
            shifts = choose_shifts(len(hashes))
        shifts = np.asarray(shifts, dtype=np.int64)
        most = min(MAX_SHIFT, 32 - row_bits(len(hashes)))
        if shifts.shape != (CHUNKS,) or shifts.min() < 0 or shifts.max() > most:
            raise ValueError(f"shifts: {CHUNKS} numbers from 0 to {most}")
        layout, size = _layout(shifts)
        rows = np.empty((CHUNKS, len(hashes)), dtype=np.uint32)
        offsets = np.zeros(size, dtype=np.int32)
        _build(hashes, rows, offsets, layout, row_bits(len(hashes)))
        return cls(hashes, rows, offsets, shifts)

    def __len__(self) -> int:
        return len(self.hashes)

    @cached_property
    def layout(self) -> I64:
        return _layout(np.asarray(self.shifts, dtype=np.int64))[0]

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.ARRAYS)

    def search(self, queries: U64, radius: int = MAX_RADIUS) -> tuple[I64, I64, I64]:
        """Every (query number, row, distance) with distance <= ``radius``, each pair once,
        ordered by query then row. Releases the GIL while it scans."""
        if not 0 <= radius <= MAX_RADIUS:
            raise ValueError(f"radius must be 0 to {MAX_RADIUS}")
        queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1, 4)
        radii = chunk_radii(radius)
        layout = self.layout

        def scan(block: U64) -> tuple[I64, I64, I64]:
            return _search(self.hashes, self.rows, self.offsets, layout, row_bits(len(self)),
                           block, radius, radii)  # fmt: skip

        threads = min(_THREADS, len(queries) // PARALLEL_FROM)
        if threads > 1:
            # The kernel releases the GIL: big batches are split across cores.
            blocks = np.array_split(np.arange(len(queries)), threads)
            parts = list(_pool().map(lambda block: scan(queries[block]), blocks))
            q = np.concatenate([p[0] + block[0] for p, block in zip(parts, blocks, strict=True)])
            r = np.concatenate([p[1] for p in parts])
            d = np.concatenate([p[2] for p in parts])
        else:
            q, r, d = scan(queries)
        # A row can sit in the probed buckets of several chunks: keep each (query, row) once.
        n = max(1, len(self))
        keys, first = np.unique(q * n + r, return_index=True)
        return keys // n, keys % n, d[first]


@numba.njit(inline="always")
def _popcount(x: np.uint64) -> np.int64:
    # SWAR popcount; LLVM turns it into one popcnt instruction where the CPU has one.
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(inline="always")
def _distance(hashes, row, q0, q1, q2, q3):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Hamming distance between the hash in ``row`` and the query's four words."""
    return (
        _popcount(hashes[row, 0] ^ q0)
        + _popcount(hashes[row, 1] ^ q1)
        + _popcount(hashes[row, 2] ^ q2)
        + _popcount(hashes[row, 3] ^ q3)
    )


@numba.njit(inline="always")
def _chunk(words, start, width):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Bits [start, start + width) of a 256-bit hash (bit i: word i // 64, bit i % 64)."""
    word, shift = start // 64, start % 64
    value = words[word] >> np.uint64(shift)
    if shift + width > 64:
        value |= words[word + 1] << np.uint64(64 - shift)
    return np.int64(value & np.uint64((1 << width) - 1))


@numba.njit(cache=True, nogil=True)
def _build(hashes, rows, offsets, layout, row_bits):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Counting sort of the rows by each chunk's bucket (its value without its ``shift`` low
    bits, which are kept above the row number); offsets[base + b] is where bucket b starts
    (stable: rows stay in order within a bucket)."""
    n = hashes.shape[0]
    values = np.empty(n, dtype=np.int64)
    for k in range(layout.shape[1]):
        start, width, shift, base = layout[0, k], layout[1, k], layout[2, k], layout[3, k]
        size = (1 << (width - shift)) + 1
        for i in range(n):
            values[i] = _chunk(hashes[i], start, width)
            offsets[base + (values[i] >> shift) + 1] += 1
        for v in range(1, size):
            offsets[base + v] += offsets[base + v - 1]
        fill = offsets[base : base + size - 1].copy()
        mask = (1 << shift) - 1
        for i in range(n):
            bucket = values[i] >> shift
            rows[k, fill[bucket]] = np.uint32(((values[i] & mask) << row_bits) | i)
            fill[bucket] += 1


@numba.njit(cache=True, nogil=True)
def _search(hashes, rows, offsets, layout, row_bits, queries, radius, radii):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """The scan, ``QUERY_BLOCK`` queries at a time, each step over all of them in the order of
    the memory it reads (what a query reads alone is scattered at random over the directories,
    ``rows`` and ``hashes``: one wait on memory after another). For each query, every bucket of
    every chunk whose high bits lie within the chunk's radius of the query's (a *probe*); the
    probes of the block sorted by bucket; each bucket's members whose low bits (kept above the
    row number) lie within what the radius leaves gathered as (row, query) candidates without a
    branch (a dense chunk's members have no low bits: all are); the candidates sorted by row
    and verified by popcount."""
    out = (np.empty(1024, np.int64), np.empty(1024, np.int64), np.empty(1024, np.int64))
    found = 0
    per_query = layout.shape[1] * (1 + 22 + 231)
    block = min(QUERY_BLOCK, queries.shape[0])
    probes = np.empty(block * per_query, dtype=np.int64)
    firsts = np.empty(block * per_query, dtype=np.int64)
    lasts = np.empty(block * per_query, dtype=np.int64)
    n = rows.shape[1]
    pairs = np.empty(block * 1024, dtype=np.int64)
    row_mask = np.uint64((1 << row_bits) - 1)
    slots = offsets.shape[0]
    for low_query in range(0, queries.shape[0], QUERY_BLOCK):
        high_query = min(queries.shape[0], low_query + QUERY_BLOCK)
        count = 0
        for qi in range(low_query, high_query):
            for k in range(layout.shape[1]):
                start, width, shift, base = layout[0, k], layout[1, k], layout[2, k], layout[3, k]
                value, radius_k = _chunk(queries[qi], start, width), radii[k]
                high, high_bits = value >> shift, width - shift
                # A probe, in bits from the top: its bucket's place in ``offsets`` (39), the
                # chunk (4), what is left of radius_k for its members' low bits (2), the
                # query's low bits (8), the query in the block (10).
                fixed = (k << 20) | ((value & ((1 << shift) - 1)) << 10) | (qi - low_query)
                probes[count] = ((base + high) << 24) | (radius_k << 18) | fixed
                count += 1
                if radius_k >= 1:
                    for a in range(high_bits):
                        bucket = base + (high ^ (1 << a))
                        probes[count] = (bucket << 24) | ((radius_k - 1) << 18) | fixed
                        count += 1
                        if radius_k >= 2:
                            for b in range(a + 1, high_bits):
                                bucket = base + (high ^ (1 << a) ^ (1 << b))
                                probes[count] = (bucket << 24) | fixed
                                count += 1
        alone = high_query - low_query < SORT_FROM
        ordered = probes
        if not alone:
            slot_bits = max(0, _bits(slots) - SORT_BINS_BITS)
            ordered = _sort_by(probes, count, 24 + slot_bits, (slots >> slot_bits) + 1)
        # Where each probe's members lie (and, for queries read alone, the first of them), read
        # in one pass of steps that do not wait on each other: the next pass finds them cached
        # (sorted probes read them in order: there it costs more than it saves).
        touched = np.uint32(0)
        for p in range(count):
            at = ordered[p] >> 24
            firsts[p], lasts[p] = offsets[at], offsets[at + 1]
            if alone and n:
                touched |= rows[(ordered[p] >> 20) & 15, min(firsts[p], n - 1)]
        gathered = 0
        for p in range(count):
            probe, first, last = ordered[p], firsts[p], lasts[p]
            k, budget = (probe >> 20) & 15, (probe >> 18) & 3
            low_value, qi = np.uint64((probe >> 10) & 255), probe & 1023
            if gathered + last - first > pairs.shape[0]:
                pairs = _grow(pairs, 2 * (gathered + last - first))
            for j in range(first, last):
                member = np.uint64(rows[k, j])
                pairs[gathered] = (np.int64(member & row_mask) << 32) | qi
                gathered += _popcount((member >> np.uint64(row_bits)) ^ low_value) <= budget
        ordered = pairs
        if not alone:
            block_bits = max(4, row_bits - SORT_BINS_BITS)
            ordered = _sort_by(pairs, gathered, 32 + block_bits, (rows.shape[1] >> block_bits) + 1)
        out_q, out_r, out_d = out
        for c in range(gathered):
            row, qi = ordered[c] >> 32, low_query + (ordered[c] & 0xFFFFFFFF)
            d = _distance(hashes, row, queries[qi, 0], queries[qi, 1], queries[qi, 2],
                          queries[qi, 3])  # fmt: skip
            if d <= radius:
                if found == out_q.shape[0]:
                    out_q = _grow(out_q, 2 * found)
                    out_r = _grow(out_r, 2 * found)
                    out_d = _grow(out_d, 2 * found)
                out_q[found] = qi
                out_r[found] = row
                out_d[found] = d
                found += 1
        out = (out_q, out_r, out_d)
        if touched == np.uint32(0xFFFFFFFF) and found < 0:  # keeps the reads: never true
            found = 0
    return out[0][:found], out[1][:found], out[2][:found]


@numba.njit(inline="always")
def _bits(n):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """How many bits ``n - 1`` needs (at least 1)."""
    bits = 1
    while (1 << bits) < n:
        bits += 1
    return bits


@numba.njit(cache=True, nogil=True)
def _sort_by(values, count, shift, bins):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """``values[:count]`` sorted (stable) by ``value >> shift``, which is below ``bins``: one
    counting sort."""
    starts = np.zeros(bins + 1, dtype=np.int64)
    for c in range(count):
        starts[(values[c] >> shift) + 1] += 1
    for b in range(1, bins + 1):
        starts[b] += starts[b - 1]
    ordered = np.empty(count, dtype=np.int64)
    for c in range(count):
        b = values[c] >> shift
        ordered[starts[b]] = values[c]
        starts[b] += 1
    return ordered


@numba.njit(inline="always")
def _grow(array, cap):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    bigger = np.empty(cap, dtype=array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


def scan(hashes: U64, queries: U64, radius: int) -> tuple[I64, I64, I64]:
    """Every (query number, row, distance) within ``radius`` by a full scan in a numba kernel
    (what a small delta of recent changes costs less to scan than to index), ordered by query
    then row; big batches split across cores like ``MIH.search``."""
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"radius must be 0 to {MAX_RADIUS}")
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64).reshape(-1, 4)
    queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1, 4)
    threads = min(_THREADS, len(queries) // PARALLEL_FROM)
    if threads <= 1:
        return _scan(hashes, queries, radius)
    blocks = np.array_split(np.arange(len(queries)), threads)
    parts = list(_pool().map(lambda block: _scan(hashes, queries[block], radius), blocks))
    q = np.concatenate([p[0] + block[0] for p, block in zip(parts, blocks, strict=True)])
    return q, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


@numba.njit(cache=True, nogil=True)
def _scan(hashes, queries, radius):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    cap = 1024
    out_q = np.empty(cap, dtype=np.int64)
    out_r = np.empty(cap, dtype=np.int64)
    out_d = np.empty(cap, dtype=np.int64)
    found = 0
    for qi in range(queries.shape[0]):
        q0, q1, q2, q3 = queries[qi, 0], queries[qi, 1], queries[qi, 2], queries[qi, 3]
        for row in range(hashes.shape[0]):
            d = _distance(hashes, row, q0, q1, q2, q3)
            if d <= radius:
                if found == cap:
                    cap *= 2
                    out_q = _grow(out_q, cap)
                    out_r = _grow(out_r, cap)
                    out_d = _grow(out_d, cap)
                out_q[found] = qi
                out_r[found] = row
                out_d[found] = d
                found += 1
    return out_q[:found], out_r[:found], out_d[:found]


def brute_force(hashes: U64, queries: U64, radius: int) -> tuple[I64, I64, I64]:
    """The reference: every (query, row, distance) within ``radius`` by a full scan in numpy
    (the tests' truth; ``scan`` is the same in a numba kernel)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64).reshape(-1, 4)
    queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1, 4)
    found: list[tuple[I64, I64, I64]] = []
    step = max(1, BLOCK_CANDIDATES // max(1, len(hashes)))
    for lo in range(0, len(queries), step):
        block = queries[lo : lo + step]
        distance = np.bitwise_count(block[:, None, :] ^ hashes[None, :, :]).sum(
            axis=2, dtype=np.int64
        )
        q, r = np.nonzero(distance <= radius)
        found.append((q.astype(np.int64) + lo, r.astype(np.int64), distance[q, r]))
    if not found:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    q, r, d = (np.concatenate(part) for part in zip(*found, strict=True))
    return q, r, d
