"""Signal types: which values the exchange accepts, their one canonical spelling, and how they
are compared.

Every value is canonicalised before it is stored, deduplicated or looked up, so two spellings
of one signal (upper- and lowercase hex, say) are one entry of a set. Pure Python: no database.

Names follow python-threatexchange's ``SignalType.get_name()`` where it has the type, so the
``hashx`` extension and HMA map types one to one: ``pdq`` (PdqSignal), ``video_md5``
(VideoMD5Signal), ``url`` (URLSignal), ``raw_text`` (RawTextSignal), and ``photodna`` (the name
its NCMEC adapter looks for; the signal class itself ships in a separate PhotoDNA extension).
It has no ``md5``, ``sha1`` or ``domain``; its SHA-256 type is ``video_sha256``, in the same
format as our ``sha256``.

Decisions where the formats leave a choice:

- ``photodna``: 144 bytes, given as base64 (standard or url-safe, padding optional) or as 144
  comma-separated decimal numbers, the HASH_PHOTODNA form of Meta's ThreatExchange; stored as
  standard base64 (192 characters; 144 bytes need no padding). Compared exactly: PhotoDNA's
  distance matching needs Microsoft's licensed code, which the exchange does not run.
- ``raw_text``: kept as given apart from surrounding whitespace, which is what RawTextSignal's
  validator does; it normalises (case, accents, punctuation) only when it compares, so folding
  inner whitespace here would change what members share and gain nothing at matching.
- ``domain`` and URL hosts: UTS #46 mapping (what browsers do, so ``straße.de`` becomes
  ``xn--strae-oqa.de`` rather than IDNA 2003's ``strasse.de``), then labels of letters, digits,
  hyphens and underscores (DNS names in real use carry underscores), at least two labels.

``SIGNAL_TYPES`` keeps the order of DESIGN.md's list, and ``/.well-known/hashx`` publishes it
as it is; add new types at the end so that no published position ever moves.
"""

import base64
import ipaddress
import json
import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import idna

from signals.warninglist import PDQ_MIN_QUALITY, warninglist_reason

# Refused before any parsing, so no parser (idna, base64) ever works on an oversized value.
MAX_VALUE_BYTES = 8192
MAX_RAW_TEXT_CHARS = 4096
# PDQ's recommended match threshold (python-threatexchange's PDQ_CONFIDENT_MATCH_THRESHOLD):
# above 31 bits false positives climb quickly, so no set may allow more.
PDQ_THRESHOLD = 31
PHOTODNA_BYTES = 144
# vpdq: one PDQ hash per sampled frame, stored or queried: at most an hour at one frame a
# second. A canonical frame takes at most 82 bytes ("<64 hex>,100,1.23e-310" quoted, and the
# separator), so a canonical value at most 295,200; the value as sent may be spelled more
# loosely (more digits, spaces), up to MAX_VPDQ_BYTES. A long value's entry is unique by its
# value's MD5 (signals.models.SetEntry), so no index caps a value's length.
MAX_VPDQ_FRAMES = 3600
MAX_VPDQ_BYTES = 512 * 1024
# python-threatexchange's VPDQ_TIMESTAMP_PRECISION: a timestamp is written f"{t:.3}".
VPDQ_TIMESTAMP_DIGITS = 3
_DIGITS = re.compile(r"[0-9]{1,3}")
_VPDQ_HEX = re.compile(r"[0-9a-fA-F]{64}")

_HEX_DIGITS = frozenset(string.hexdigits)
_DECIMAL_BYTE = re.compile(r"[0-9]{1,3}")
# After UTS #46 mapping labels are lowercase; a label neither starts nor ends with a hyphen.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SignalTypeError(ValueError):
    """Refusal of a value; str(exc) is the human reason, e.g. 'pdq: expected 64 hex digits, got
    63'. Publishing reports it per item, so it names the type and what was wrong."""


@dataclass(frozen=True)
class SignalType:
    """One kind of signal, and how its values are spelled and compared."""

    name: str
    description: str
    comparison: Literal["exact", "hamming"]
    default_threshold: int | None
    max_threshold: int | None
    # Takes the value stripped of surrounding whitespace and within size; raises
    # SignalTypeError with a reason that ``canonical`` prefixes with the type name.
    parse: Callable[[str], str] = field(repr=False, compare=False)
    # Refused before parsing above this size.
    max_bytes: int = MAX_VALUE_BYTES

    def canonical(self, value: str) -> str:
        """``value`` in its canonical spelling, or SignalTypeError saying why it is refused.

        Only the format: the warninglist is ``canonicalise``'s job, so looking up a
        warninglisted value (which matches nothing) is not an error."""
        try:
            return self.parse(_bounded(value, self.max_bytes))
        except SignalTypeError as exc:
            raise SignalTypeError(f"{self.name}: {exc}") from None


def storable(text: str) -> bool:
    """Whether Postgres can store ``text``: no NUL and no lone surrogate."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _bounded(value: object, max_bytes: int = MAX_VALUE_BYTES) -> str:
    """The checks every type shares, size first; returns the value without surrounding
    whitespace. NUL and lone surrogates would make Postgres refuse the row later."""
    if not isinstance(value, str):
        raise SignalTypeError(f"expected a string, got {type(value).__name__}")
    if len(value) > max_bytes:
        raise SignalTypeError(f"longer than {max_bytes} bytes")
    if not value.isascii():  # ASCII (every hash) is one byte a character: no need to encode
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            raise SignalTypeError("not valid Unicode text (lone surrogate)") from None
        if size > max_bytes:
            raise SignalTypeError(f"longer than {max_bytes} bytes")
    if "\x00" in value:
        raise SignalTypeError("contains a NUL character")
    stripped = value.strip()
    if not stripped:
        raise SignalTypeError("empty value")
    return stripped


def _hex(digits: int) -> Callable[[str], str]:
    pattern = re.compile(f"[0-9a-fA-F]{{{digits}}}")

    def parse(value: str) -> str:
        if len(value) != digits:
            raise SignalTypeError(f"expected {digits} hex digits, got {len(value)}")
        if pattern.fullmatch(value):  # the common case, at C speed
            return value.lower()
        bad = next((char for char in value if char not in _HEX_DIGITS), None)
        if bad is not None:
            raise SignalTypeError(f"expected {digits} hex digits, got {bad!r}")
        return value.lower()

    return parse


def _photodna(value: str) -> str:
    if "," in value:
        numbers = [part.strip() for part in value.split(",")]
        if len(numbers) != PHOTODNA_BYTES:
            raise SignalTypeError(
                f"expected {PHOTODNA_BYTES} comma-separated numbers, got {len(numbers)}"
            )
        if not all(_DECIMAL_BYTE.fullmatch(n) and int(n) <= 255 for n in numbers):
            raise SignalTypeError("comma-separated numbers must be whole numbers from 0 to 255")
        raw = bytes(int(n) for n in numbers)
    else:
        text = value.replace("-", "+").replace("_", "/").rstrip("=")
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise SignalTypeError(
                f"expected base64 or {PHOTODNA_BYTES} comma-separated numbers"
            ) from None
        if len(raw) != PHOTODNA_BYTES:
            raise SignalTypeError(f"expected {PHOTODNA_BYTES} bytes, got {len(raw)}")
    return base64.b64encode(raw).decode("ascii")


def _label(label: str) -> str:
    """One label of a UTS #46-mapped name, as ASCII."""
    if not label:
        raise SignalTypeError("empty label (two dots in a row, or a leading dot)")
    try:
        if not label.isascii():
            label = idna.alabel(label).decode("ascii")
        elif label.startswith("xn--") and idna.alabel(idna.ulabel(label)).decode() != label:
            # Punycode has one spelling per name; another would dodge dedup and matching.
            raise SignalTypeError(f"label {label!r} is not canonical punycode")
    except idna.IDNAError as exc:
        raise SignalTypeError(f"not a valid internationalised label ({exc})") from None
    if len(label) > 63:
        raise SignalTypeError("label longer than 63 characters")
    if not _LABEL.fullmatch(label):
        raise SignalTypeError(
            f"label {label!r} may hold only letters, digits, hyphens and underscores,"
            " and may not start or end with a hyphen"
        )
    return label


def _domain(value: str) -> str:
    try:
        mapped = idna.uts46_remap(value, std3_rules=False, transitional=False)
    except idna.IDNAError as exc:
        raise SignalTypeError(f"not a valid hostname ({exc})") from None
    labels = [_label(label) for label in mapped.removesuffix(".").split(".")]
    if len(labels) < 2:
        raise SignalTypeError("a domain needs at least two labels, as in example.com")
    if labels[-1].isdigit():
        raise SignalTypeError("an IP address is not a domain")
    name = ".".join(labels)
    if len(name) > 253:
        raise SignalTypeError("longer than 253 characters")
    return name


def _host(host: str) -> str:
    """A URL's host: an IPv6 literal in brackets, a dotted-quad IPv4 address or a domain."""
    try:
        if host.startswith("["):
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        if host.rpartition(".")[2].isdigit():
            return str(ipaddress.IPv4Address(host))
    except ValueError:
        raise SignalTypeError("host is not a valid IP address") from None
    return _domain(host)


def _port(text: str) -> int | None:
    if not text:
        return None
    if not (len(text) <= 5 and text.isascii() and text.isdigit() and 0 < int(text) <= 65535):
        raise SignalTypeError("port must be a number from 1 to 65535")
    return int(text)


def _url(value: str) -> str:
    # urlsplit silently drops tabs and newlines, so look before it does.
    if any(char.isspace() or not char.isprintable() for char in value):
        raise SignalTypeError("URL contains whitespace or control characters")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise SignalTypeError(f"not a valid URL ({exc})") from None
    if parts.scheme not in _DEFAULT_PORTS:
        found = repr(parts.scheme) if parts.scheme else "none"
        raise SignalTypeError(f"only http and https URLs are accepted, scheme: {found}")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            raise SignalTypeError("unexpected text after the IPv6 address")
        port = _port(rest[1:])
    else:
        host, _, port_text = hostport.partition(":")
        port = _port(port_text)
    if not host:
        raise SignalTypeError("URL has no host")
    netloc = _host(host)
    if userinfo:
        # Kept as given: in "https://bank.example@evil.example/" they are the lure.
        netloc = f"{userinfo}@{netloc}"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        netloc += f":{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path or '/'}{query}"


def _raw_text(value: str) -> str:
    if len(value) > MAX_RAW_TEXT_CHARS:
        raise SignalTypeError(f"longer than {MAX_RAW_TEXT_CHARS} characters ({len(value)})")
    return value


@dataclass(frozen=True)
class VpdqFrame:
    """One frame of a vPDQ signal: its PDQ hash (lowercase hex), quality and timestamp (s)."""

    pdq: str
    quality: int
    timestamp: float

    def __str__(self) -> str:
        """python-threatexchange's spelling (VpdqCompactFeature.__str__)."""
        return f"{self.pdq},{self.quality},{self.timestamp:.{VPDQ_TIMESTAMP_DIGITS}}"


def vpdq_frames(value: str) -> list[VpdqFrame]:
    """The frames of a vPDQ value in python-threatexchange's serialisation (a JSON list of
    "pdq hex,quality,timestamp" strings), validated: 1 to MAX_VPDQ_FRAMES frames, each
    64 hex digits, quality 0-100, timestamps finite, not negative and non-decreasing."""
    try:
        items = json.loads(value)
    except ValueError:
        raise SignalTypeError('expected a JSON list of "pdq,quality,timestamp" strings') from None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise SignalTypeError('expected a JSON list of "pdq,quality,timestamp" strings')
    if not 0 < len(items) <= MAX_VPDQ_FRAMES:
        raise SignalTypeError(
            f"expected 1 to {MAX_VPDQ_FRAMES} frames (an hour at one frame a second),"
            f" got {len(items)}"
        )
    frames: list[VpdqFrame] = []
    for number, item in enumerate(items):
        parts = item.split(",")
        if len(parts) != 3:
            raise SignalTypeError(f'frame {number}: expected "pdq,quality,timestamp"')
        pdq, quality, timestamp = (part.strip() for part in parts)
        if not _VPDQ_HEX.fullmatch(pdq):
            raise SignalTypeError(f"frame {number}: expected 64 hex digits")
        if not _DIGITS.fullmatch(quality) or int(quality) > 100:
            raise SignalTypeError(f"frame {number}: quality must be a whole number from 0 to 100")
        try:
            seconds = float(timestamp)
        except ValueError:
            raise SignalTypeError(f"frame {number}: timestamp is not a number") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise SignalTypeError(f"frame {number}: timestamp must be a number of seconds >= 0")
        if frames and seconds < frames[-1].timestamp:
            raise SignalTypeError(f"frame {number}: timestamps must not decrease")
        frames.append(VpdqFrame(pdq.lower(), int(quality), seconds))
    return frames


def _vpdq(value: str) -> str:
    """The frames as python-threatexchange's vpdq_to_json writes them: a value it wrote is
    its own canonical spelling, and a canonical value round-trips through it unchanged."""
    return json.dumps([str(frame) for frame in vpdq_frames(value)])


SIGNAL_TYPES: dict[str, SignalType] = {
    signal_type.name: signal_type
    for signal_type in (
        SignalType(
            "pdq",
            "PDQ perceptual hash of an image: 64 hex digits, matched within a Hamming distance",
            "hamming",
            PDQ_THRESHOLD,
            PDQ_THRESHOLD,
            _hex(64),
        ),
        SignalType("md5", "MD5 of a file: 32 hex digits", "exact", None, None, _hex(32)),
        SignalType("sha1", "SHA-1 of a file: 40 hex digits", "exact", None, None, _hex(40)),
        SignalType("sha256", "SHA-256 of a file: 64 hex digits", "exact", None, None, _hex(64)),
        SignalType(
            "video_md5", "MD5 of a video file: 32 hex digits", "exact", None, None, _hex(32)
        ),
        SignalType(
            "photodna",
            "PhotoDNA hash of an image: 144 bytes in base64",
            "exact",
            None,
            None,
            _photodna,
        ),
        SignalType(
            "url",
            "http(s) URL: scheme and host lowercase, host in punycode, no default port or fragment",
            "exact",
            None,
            None,
            _url,
        ),
        SignalType(
            "domain",
            "Domain name: lowercase, punycode, no trailing dot",
            "exact",
            None,
            None,
            _domain,
        ),
        SignalType(
            "raw_text",
            f"Text as given, surrounding whitespace stripped, at most {MAX_RAW_TEXT_CHARS} chars",
            "exact",
            None,
            None,
            _raw_text,
        ),
        SignalType(
            "vpdq",
            "vPDQ hash of a video: python-threatexchange's JSON list of"
            ' "pdq,quality,timestamp" frames, matched frame by frame within a PDQ distance',
            "hamming",
            PDQ_THRESHOLD,
            PDQ_THRESHOLD,
            _vpdq,
            MAX_VPDQ_BYTES,
        ),
    )
}


def canonicalise(type_name: str, value: str, *, quality: int | None = None) -> str:
    """Validate, canonicalise and warninglist-check one value; raises SignalTypeError
    (unknown type, malformed value, warninglisted value, quality out of range or below 50
    for pdq). `quality` is only meaningful for pdq (0-100); giving it for another type is an
    error, because a member who sends it believes it filters something."""
    signal_type = SIGNAL_TYPES.get(type_name) if isinstance(type_name, str) else None
    if signal_type is None:
        raise SignalTypeError(
            f"unknown signal type {type_name!r:.40}; known types: {', '.join(SIGNAL_TYPES)}"
        )
    canonical = signal_type.canonical(value)
    if quality is not None:
        if signal_type.name != "pdq":
            raise SignalTypeError(f"{type_name}: quality applies to pdq only")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
            raise SignalTypeError(
                f"pdq: quality must be a whole number from 0 to 100: {quality!r:.20}"
            )
    reason = warninglist_reason(signal_type.name, canonical)
    if reason is None and quality is not None and quality < PDQ_MIN_QUALITY:
        reason = f"quality {quality} is below {PDQ_MIN_QUALITY}, too unreliable to match on"
    if reason is not None:
        raise SignalTypeError(f"{type_name}: refused by the warninglist: {reason}")
    return canonical


def describe_types() -> list[dict[str, object]]:
    """What /.well-known/hashx publishes: for each type name, description, comparison,
    default_threshold, max_threshold."""
    return [
        {
            "name": signal_type.name,
            "description": signal_type.description,
            "comparison": signal_type.comparison,
            "default_threshold": signal_type.default_threshold,
            "max_threshold": signal_type.max_threshold,
        }
        for signal_type in SIGNAL_TYPES.values()
    ]
