"""A set of entry ids that fits in a checkpoint: what a fetcher holds, so that a full resync can
delete everything it holds and the exchange no longer serves (see ``hashx.threatexchange``).

Ids are kept as bitmaps of 65,536 ids each; a checkpoint carries each non-empty bitmap as
zlib-compressed base64 text keyed by its number (a JSON object, as HMA stores checkpoints). A
bitmap of ids a set holds all or none of compresses to a few dozen characters, so a million
entries published in batches take about a kilobyte, and ids scattered thinly over a hundred
million cost about three bytes each. Bitmaps are decoded when first touched and only changed
ones are compressed again, so following the feed a page at a time stays cheap however large the
set.
"""

import base64
import zlib
from collections.abc import Iterator, Mapping

_SHIFT = 16
_BITS = 1 << _SHIFT
_BYTES = _BITS // 8


class IdSet:
    def __init__(self, encoded: Mapping[str, str] | None = None) -> None:
        self._encoded: dict[int, str] = {int(n): text for n, text in (encoded or {}).items()}
        self._chunks: dict[int, bytearray] = {}
        self._dirty: set[int] = set()

    def _chunk(self, number: int) -> bytearray:
        chunk = self._chunks.get(number)
        if chunk is None:
            text = self._encoded.get(number)
            chunk = bytearray(zlib.decompress(base64.b64decode(text)) if text else _BYTES)
            if len(chunk) != _BYTES:
                raise ValueError(f"id bitmap {number} has {len(chunk)} bytes, not {_BYTES}")
            self._chunks[number] = chunk
        return chunk

    def _numbers(self) -> list[int]:
        return sorted({*self._encoded, *self._chunks})

    def add(self, entry: int) -> None:
        number, bit = divmod(entry, _BITS)
        self._chunk(number)[bit >> 3] |= 1 << (bit & 7)
        self._dirty.add(number)

    def discard(self, entry: int) -> None:
        number, bit = divmod(entry, _BITS)
        if number in self._encoded or number in self._chunks:
            self._chunk(number)[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF
            self._dirty.add(number)

    def __contains__(self, entry: object) -> bool:
        if not isinstance(entry, int):
            return False
        number, bit = divmod(entry, _BITS)
        if number not in self._encoded and number not in self._chunks:
            return False
        return bool(self._chunk(number)[bit >> 3] & (1 << (bit & 7)))

    def __iter__(self) -> Iterator[int]:
        return self.minus(IdSet())

    def __len__(self) -> int:
        return sum(int.from_bytes(self._chunk(n), "little").bit_count() for n in self._numbers())

    def minus(self, other: "IdSet") -> Iterator[int]:
        """The ids in this set and not in ``other``, in ascending order."""
        for number in self._numbers():
            mine = int.from_bytes(self._chunk(number), "little")
            if number in other._encoded or number in other._chunks:
                mine &= ~int.from_bytes(other._chunk(number), "little")
            base = number * _BITS
            for index, byte in enumerate(mine.to_bytes(_BYTES, "little")):
                while byte:
                    low = byte & -byte
                    yield base + index * 8 + low.bit_length() - 1
                    byte ^= low

    def encoded(self) -> dict[str, str]:
        """The set as checkpoint text: a new dict each time, so a checkpoint handed out earlier
        never changes under its holder."""
        for number in self._dirty:
            chunk = self._chunks[number]
            if any(chunk):
                self._encoded[number] = base64.b64encode(zlib.compress(bytes(chunk), 9)).decode()
            else:
                self._encoded.pop(number, None)
                del self._chunks[number]
        self._dirty.clear()
        return {str(number): self._encoded[number] for number in sorted(self._encoded)}
