import hashlib
from collections.abc import Iterator

from django.http import HttpRequest

from exchange.problems import Problem
from members.auth import check_digest

CHUNK = 1 << 20
MAX_LINE = 64 * 1024
# Stands in for a line longer than MAX_LINE; the parsers reject it by its line number.
TOO_LONG = b"\x00line too long"


class DigestReader:
    """Lines of a streamed request body, hashed as they are read; ``verify()`` at the end
    compares with the signed Content-Digest that authentication stored on the request."""

    def __init__(self, request: HttpRequest) -> None:
        expected = getattr(request, "hashx_digest", None)
        if expected is None:
            raise Problem("digest-mismatch", "A streamed body needs a signed Content-Digest")
        if "CONTENT_LENGTH" not in request.META or not request.META["CONTENT_LENGTH"]:
            raise Problem("validation", "A streamed upload needs a Content-Length")
        self.request = request
        self.expected: bytes = expected
        self.sha = hashlib.sha256()

    def _chunks(self) -> Iterator[bytes]:
        # Big reads: the WSGI input's readline() is slow line by line on large uploads.
        for chunk in iter(lambda: self.request.read(CHUNK), b""):
            self.sha.update(chunk)
            yield chunk

    def __iter__(self) -> Iterator[bytes]:
        rest, skipping = b"", False
        for chunk in self._chunks():
            if skipping:  # still inside a line too long to keep: drop up to its end
                end = chunk.find(b"\n")
                if end < 0:
                    continue
                chunk, skipping = chunk[end + 1 :], False
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line if len(line) <= MAX_LINE else TOO_LONG
            if len(rest) > MAX_LINE:
                # Never hold a runaway line in memory: it is one rejected line.
                yield TOO_LONG
                rest, skipping = b"", True
        if rest:
            yield rest

    def verify(self) -> None:
        # Whatever the consumer did not read still belongs to the body.
        for _ in self._chunks():
            pass
        check_digest(self.expected, self.sha.digest())
