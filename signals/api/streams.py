import hashlib
from collections.abc import Iterator

from django.http import HttpRequest

from exchange.problems import Problem
from members.auth import check_digest

CHUNK = 1 << 20


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
        rest = b""
        for chunk in self._chunks():
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest

    def verify(self) -> None:
        # Whatever the consumer did not read still belongs to the body.
        for _ in self._chunks():
            pass
        check_digest(self.expected, self.sha.digest())
