"""Reading uploads: a streamed body's lines, hashed against its signed Content-Digest as they
are read (``DigestReader``), and the parsers that turn a JSON list or an NDJSON, CSV or
``<type> <value>`` stream into numbered raw items (a ``Source``) for ``do_publish``.

Streams are read line by line and never held whole in memory: NDJSON (one item object per line),
CSV (header row: ``type,value`` and optionally ``labels`` (``|``-separated), ``expires_at``,
``quality``), or python-threatexchange's plain format (``<type> <value>`` per line).
"""

import csv
import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from django.http import HttpRequest

from exchange.bodies import MAX_DEPTH, TooDeep, check_nesting
from exchange.problems import Problem, invalid
from members.auth import check_digest
from members.principal import MemberPrincipal
from signals.actions.publish import Source, Unparsable

CHUNK = 1 << 20
MAX_LINE = 64 * 1024
# Stands in for a line longer than MAX_LINE; the parsers reject it by its line number.
TOO_LONG = b"\x00line too long"


class DigestReader:
    """Lines of a streamed request body, hashed as they are read; ``verify()`` at the end
    compares with ``expected``, the signed Content-Digest that authentication read from the
    request (``MemberPrincipal.streamed_digest``; None when the request had none)."""

    def __init__(self, request: HttpRequest, expected: bytes | None) -> None:
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


# -- idempotency ------------------------------------------------------------------------------

_IDEMPOTENCY_KEY = re.compile(r"[ -~]{1,200}")


def idempotency_key_of(request: Any) -> str:
    """The request's ``Idempotency-Key`` ("" without one): 1 to 200 printable ASCII characters,
    else 400 (a longer one was cut to 200, so two keys could collide)."""
    key: str = request.headers.get("Idempotency-Key", "")
    if key and not _IDEMPOTENCY_KEY.fullmatch(key):
        message = "1 to 200 printable ASCII characters"
        raise invalid("Idempotency-Key", message)
    return key


def fingerprint(request: HttpRequest, slug: str, atomic: bool, principal: MemberPrincipal) -> str:
    """What an ``Idempotency-Key`` is stored with (the IETF Idempotency-Key draft's request
    fingerprint): the set, the content type, ``atomic`` and the body's SHA-256, for a streamed
    upload the signed Content-Digest it is checked against as it is read."""
    digest = principal.streamed_digest
    if digest is None:
        digest = hashlib.sha256(request.body).digest()  # a JSON body, read by authentication
    head = f"{slug}\n{request.content_type}\n{int(atomic)}\n".encode()
    return hashlib.sha256(head + digest).hexdigest()


# -- parsers -----------------------------------------------------------------------------------


def json_items(signals: list[Any]) -> Source:
    """The items of a JSON publish, numbered by index (the serializer bounded the list)."""
    return Source("index", enumerate(signals))


_TOO_LONG = Unparsable("line longer than 64 KiB")


def _numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(lines, start=1):
        if raw.startswith(b"\x00"):
            yield number, "\x00"  # a line the reader cut (over 64 KiB): refused below
            continue
        text = raw.decode("utf-8", "replace").strip()
        if text and not text.startswith("#"):
            yield number, text


_TOO_DEEP = Unparsable(f"nested deeper than {MAX_DEPTH} levels")
_NOT_JSON = Unparsable("not valid JSON")


def _ndjson(lines: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
    loads = orjson.loads
    for number, raw in enumerate(lines, start=1):
        try:
            check_nesting(raw)  # bounded before parsing, as every JSON body (exchange.bodies)
            yield number, loads(raw)  # the common case: no decode, no strip (JSON allows space)
            continue
        except TooDeep:
            reason = _TOO_DEEP
        except ValueError:  # orjson's JSONDecodeError, or brackets that do not pair up
            reason = _NOT_JSON
        if raw.startswith(b"\x00"):
            yield number, _TOO_LONG  # a line the reader cut
            continue
        text = raw.strip()
        if not text or text.startswith(b"#"):
            continue  # blank lines and comments
        try:
            text.decode()
        except UnicodeDecodeError:
            yield number, Unparsable("not valid UTF-8")
            continue
        yield number, reason


def ndjson_items(lines: Iterable[bytes]) -> Source:
    return Source("line", _ndjson(lines))


def _text(lines: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
    for number, text in _numbered(lines):
        if text == "\x00":
            yield number, _TOO_LONG
            continue
        kind, _, value = text.partition(" ")
        yield number, {"type": kind, "value": value}


def text_items(lines: Iterable[bytes]) -> Source:
    """python-threatexchange's simple format: ``<type> <value>`` per line."""
    return Source("line", _text(lines))


def csv_items(lines: Iterable[bytes]) -> Source:
    decoded = (line.decode("utf-8", "replace") for line in lines)
    reader = csv.DictReader(decoded)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:  # e.g. a stray carriage return in the header row
        raise Problem("validation", f"the CSV header row is not a CSV row: {exc}") from None
    if fieldnames is None or not {"type", "value"} <= set(fieldnames):
        raise Problem(
            "validation", "CSV needs a header row with at least the columns type and value"
        )
    return Source("line", _csv(reader))


def _csv(reader: csv.DictReader[str]) -> Iterator[tuple[int, Any]]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a stray carriage return or an unclosed quote
            yield reader.line_num, Unparsable(f"not a CSV row: {exc}")
            continue
        if "\x00" in (row.get("type") or ""):  # a line the reader cut (over 64 KiB)
            yield reader.line_num, _TOO_LONG
            continue
        item: dict[str, Any] = {"type": row.get("type") or "", "value": row.get("value") or ""}
        if row.get("labels"):
            item["labels"] = [x for x in row["labels"].split("|") if x]
        if row.get("expires_at"):
            item["expires_at"] = row["expires_at"]
        if row.get("quality"):
            try:
                item["quality"] = int(row["quality"])
            except ValueError:
                item["quality"] = row["quality"]
        yield reader.line_num, item
