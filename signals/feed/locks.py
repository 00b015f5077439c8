"""The advisory locks that serialise writers of a set's entries (DESIGN.md "Change feed").

Writers of a set's entries take transaction-scoped advisory locks on (set, slot), a slot being
the first byte of the value's MD5 mod ``MAX_PARTS``: a merge part locks the slots its values
fall in (``part_slots``), so merges of two batches into one set, whatever their part counts,
take turns where they could share a value, and everything else that writes entries
(retractions, opinions, expiry, near-duplicate links, tombstone purges) locks every slot
(``lock_set``).

Work that may be queued twice holds a try-lock named by ``advisory_key`` while it runs (a merge
part, a batch's near-duplicate linking): a second worker steps aside, and ``held_keys`` tells
beat exactly which of them a live session is running, since PostgreSQL lets a lock go the moment
the session holding it ends, a worker killed with SIGKILL included.
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


# Advisory locks taken with one bigint key: pg_locks shows its high half as classid, its low half
# as objid, and objsubid 1.
_SQL_HELD = """
SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((classid::bigint << 32) | objid::bigint) = ANY(%s::bigint[])
"""


def held_keys(cursor: Any, keys: list[int]) -> set[int]:
    """Which of these ``advisory_key`` keys some live session of this database holds now."""
    if not keys:
        return set()
    cursor.execute(_SQL_HELD, [keys])
    return {key for (key,) in cursor.fetchall()}
