"""Request bodies: JSON bounded in size and nesting before any parser sees it, and the one check
that a request which needs a body came with one.

Python's json module recurses once per level of nesting: a body nested ~1,500 deep was a
RecursionError (a 500) in DRF's parser, and DRF's JSONField recurses again when it re-encodes an
item. ``check_nesting`` measures a JSON text's nesting without parsing it, at C speed (bytes
methods and numpy: 10 MB of brackets in ~30 ms), so that no parser (DRF's, or the NDJSON
reader's for each line) is handed a text nested deeper than ``MAX_DEPTH``.
"""

import io
from typing import Any

import numpy
from django.conf import settings
from django.http import HttpRequest
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.request import Request

from exchange.problems import Problem

# Arrays and objects inside one another; the deepest item the API takes nests four.
MAX_DEPTH = 64

# Objects nest like arrays: one kind of bracket; quotes kept to tell strings apart, and every
# other byte deleted.
_AS_ARRAYS = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))
_CHUNK = 1 << 20


class TooDeep(ValueError):
    pass


def check_nesting(text: bytes, limit: int = MAX_DEPTH) -> None:
    """Raise ``TooDeep`` when the JSON ``text`` nests arrays and objects more than ``limit``
    deep, or ``ValueError`` when its brackets do not pair up (it is not JSON either, and a
    parser would recurse into every unclosed one before saying so)."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return  # the common case, and every short text: not enough brackets to be too deep
    # Escaped backslashes first (a run of them pairs off from the left), then escaped quotes:
    # every quote left opens or closes a string, and the brackets outside strings are the
    # even-numbered pieces between quotes.
    unescaped = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    pieces = unescaped.translate(_AS_ARRAYS, _NOT_STRUCTURE).split(b'"')
    # The depth after each bracket: a running sum of +1 for "[" (91) and -1 for "]" (93), a
    # million brackets at a time (4 MB of int32 however long the text).
    steps = numpy.frombuffer(b"".join(pieces[::2]), dtype=numpy.int8)
    level = 0
    for start in range(0, len(steps), _CHUNK):
        depths = numpy.cumsum(92 - steps[start : start + _CHUNK], dtype=numpy.int32) + level
        if depths.max() > limit:
            raise TooDeep(f"nested deeper than {limit} levels")
        if depths.min() < 0:
            raise ValueError("brackets that do not pair up")
        level = int(depths[-1])
    if level:
        raise ValueError("brackets that do not pair up")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser (the API's only one), bounded: a body past
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` answers 413, a blank one 400 ``empty-body``, one nested
    deeper than ``MAX_DEPTH`` or not in its declared charset 400, before ``json`` parses it."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        text = stream.read(limit + 1)
        if len(text) > limit:
            raise Problem("payload-too-large", f"The body exceeds {limit} bytes.")
        context = dict(parser_context or {})
        encoding = str(context.get("encoding") or "utf-8")
        if encoding.lower().replace("_", "-") not in {"utf-8", "utf8"}:
            try:
                text = text.decode(encoding).encode()
            except (LookupError, UnicodeError):
                raise ParseError(f"JSON parse error - the body is not {encoding:.40}") from None
            context["encoding"] = "utf-8"
        if not text.strip():
            raise _empty(context.get("request"))
        try:
            check_nesting(text)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        return super().parse(io.BytesIO(text), media_type, context)


def has_body(request: HttpRequest) -> bool:
    """Whether the request carries a body Django will read: a positive Content-Length (a body
    sent without one, chunked, is read as empty)."""
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > 0
    except ValueError:
        return False


def _empty(request: Request | HttpRequest | None) -> Problem:
    what = f"{request.method} {request.path}" if request is not None else "This request"
    return Problem(
        "empty-body",
        f"The request body is empty: {what} needs one, sent with a Content-Length"
        " (JSON: {} where every field may be left out)",
    )


def require_body(request: Request) -> None:
    """400 ``empty-body`` when a request that needs a body came without one."""
    if not has_body(request._request):
        raise _empty(request)


def body_of(request: Request) -> Any:
    """The parsed JSON body of a request that needs one: every view that reads a body asks
    here, never ``request.data``, which reads an empty body as ``{}``."""
    require_body(request)
    return request.data
