"""Streamed bodies are read in chunks, hashed as they go, and never hold a runaway line."""

import hashlib
import io

import pytest

from exchange.problems import Problem
from signals.api import uploads
from signals.api.uploads import TOO_LONG, DigestReader


class Upload:
    """The little of a Django request DigestReader uses: META and read()."""

    def __init__(self, body: bytes, piece: int = 1000) -> None:
        self.META = {"CONTENT_LENGTH": str(len(body))}
        self.body = io.BytesIO(body)
        self.piece = piece

    def read(self, size: int) -> bytes:
        return self.body.read(min(size, self.piece))


def reader_of(body: bytes, digest: bytes | None = None, piece: int = 1000) -> DigestReader:
    """A reader of ``body`` whose signed digest was ``digest`` (default: the body's own)."""
    signed = hashlib.sha256(body).digest() if digest is None else digest
    return DigestReader(Upload(body, piece=piece), signed)  # type: ignore[arg-type]


def test_lines_split_across_chunks_come_out_whole(monkeypatch):
    monkeypatch.setattr(uploads, "CHUNK", 7)
    body = b"first line\nsecond\n\nthird without newline"
    reader = reader_of(body, piece=7)
    assert list(reader) == [b"first line", b"second", b"", b"third without newline"]
    reader.verify()


def test_a_line_longer_than_the_limit_is_cut_without_being_held(monkeypatch):
    monkeypatch.setattr(uploads, "CHUNK", 1000)
    body = b"ok\n" + b"x" * 200_000 + b"\nafter\n"
    assert list(reader_of(body)) == [b"ok", TOO_LONG, b"after"]


def test_a_body_that_does_not_match_its_digest_is_refused_at_the_end():
    reader = reader_of(b"a\nb\n", digest=hashlib.sha256(b"other").digest())
    assert list(reader) == [b"a", b"b"]
    with pytest.raises(Problem) as refused:
        reader.verify()
    assert refused.value.slug == "digest-mismatch"
