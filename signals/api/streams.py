import hashlib
from collections.abc import Iterator

from django.http import HttpRequest

from exchange.problems import Problem
from members.auth import check_digest


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

    def __iter__(self) -> Iterator[bytes]:
        for line in self.request:
            self.sha.update(line)
            yield line

    def verify(self) -> None:
        # Whatever the consumer did not read still belongs to the body.
        for line in self.request:
            self.sha.update(line)
        check_digest(self.expected, self.sha.digest())
