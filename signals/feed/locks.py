"""The advisory locks that serialise writers of a set's entries (DESIGN.md "Change feed").

Writers of a set's entries take transaction-scoped advisory locks on (set, slot), a slot being
the first byte of the value's MD5 mod ``MAX_PARTS``: a merge part locks the slots its values
fall in (``part_slots``), so merges of two batches into one set, whatever their part counts,
take turns where they could share a value, and everything else that writes entries
(retractions, opinions, expiry, near-duplicate links, tombstone purges) locks every slot
(``lock_set``).
"""

import hashlib
from typing import Any

# pg_advisory_xact_lock(SET_LOCK + slot, set id): a set's values fall into MAX_PARTS slots (by
# the first byte of their MD5, mod MAX_PARTS); a writer locks every slot its values may fall in.
SET_LOCK = 0x6878_5E7
MAX_PARTS = 8
# Part counts that divide MAX_PARTS: part k of p is then exactly the slots k, k + p, k + 2p, …,
# so batches merged in different numbers of parts still lock every value they share.
PART_COUNTS = (1, 2, 4, 8)


def part_slots(parts: int, part: int) -> range:
    """The slots whose values belong to ``part`` of ``parts`` (ascending: no deadlock)."""
    return range(part, MAX_PARTS, parts)


def lock_slots(cursor: Any, set_id: int, slots: range) -> None:
    cursor.execute(
        "; ".join(f"SELECT pg_advisory_xact_lock({SET_LOCK + slot}, %s)" for slot in slots),
        [set_id] * len(slots),
    )


def lock_set(cursor: Any, set_id: int) -> None:
    """Every slot of the set (in order: two callers never deadlock)."""
    lock_slots(cursor, set_id, part_slots(1, 0))


def in_part(column: str, parts: int, part: int) -> str:
    """SQL: whether the value in ``column`` belongs to ``part`` of ``parts`` (stable across
    servers and versions, unlike Postgres' own hash functions)."""
    if parts == 1:
        return "TRUE"
    return f"mod(get_byte(decode(md5({column}), 'hex'), 0), {int(parts)}) = {int(part)}"


def advisory_key(name: str) -> int:
    """A 64-bit advisory lock key for ``name`` (stable across processes and versions)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
