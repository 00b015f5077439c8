"""Signal types: accepted spellings and their canonical form, refusals with their reasons, the
warninglist, and agreement with python-threatexchange's own validators."""

import base64
import hashlib
import io
from typing import Any

import pytest

from signals.types import (
    MAX_RAW_TEXT_CHARS,
    MAX_VALUE_BYTES,
    SIGNAL_TYPES,
    SignalTypeError,
    canonicalise,
    describe_types,
)
from signals.warninglist import PDQ_MIN_QUALITY, WARNINGLIST, WHITE_IMAGE_PDQ
from tests.conftest import REPO_ROOT

PDQ_DATA = REPO_ROOT.parent / "shared" / "data" / "pdq"
HAYSTACK = [line for line in (PDQ_DATA / "haystack.txt").read_text().splitlines() if line]
REAL_PDQ = HAYSTACK[0]

MD5 = hashlib.md5(b"hash exchange", usedforsecurity=False).hexdigest()
SHA1 = hashlib.sha1(b"hash exchange", usedforsecurity=False).hexdigest()
SHA256 = hashlib.sha256(b"hash exchange").hexdigest()
# Leading bytes whose standard base64 holds '+' and '/', so the url-safe spelling differs.
PHOTODNA = bytes([0xFB, 0xEF, 0xFF]) * 8 + bytes(range(120))
PHOTODNA_B64 = base64.b64encode(PHOTODNA).decode()

PTX_MISSING = "python-threatexchange is not installed (pip install threatexchange==1.2.17)"


def refusal(type_name: str, value: Any, **kwargs: Any) -> str:
    with pytest.raises(SignalTypeError) as caught:
        canonicalise(type_name, value, **kwargs)
    return str(caught.value)


def ptx(module: str, name: str) -> Any:
    """A python-threatexchange class; the test skips only when the package cannot be imported."""
    return getattr(pytest.importorskip(f"threatexchange.{module}", reason=PTX_MISSING), name)


ACCEPTED = [
    ("pdq", REAL_PDQ, REAL_PDQ),
    ("pdq", f"  {REAL_PDQ.upper()}\n", REAL_PDQ),
    ("md5", MD5.upper(), MD5),
    ("sha1", f"\t{SHA1.upper()} ", SHA1),
    ("sha256", SHA256.upper(), SHA256),
    ("video_md5", f" {MD5.upper()} ", MD5),
    ("photodna", PHOTODNA_B64, PHOTODNA_B64),
    ("photodna", base64.urlsafe_b64encode(PHOTODNA).decode(), PHOTODNA_B64),
    ("photodna", f" {PHOTODNA_B64}== ", PHOTODNA_B64),
    ("photodna", ",".join(str(byte) for byte in PHOTODNA), PHOTODNA_B64),
    ("photodna", ", ".join(str(byte) for byte in PHOTODNA), PHOTODNA_B64),
    ("url", " HTTPS://Example.COM:443/Path/A?Q=1&b=2#top ", "https://example.com/Path/A?Q=1&b=2"),
    ("url", "http://example.com", "http://example.com/"),
    ("url", "http://example.com:80", "http://example.com/"),
    ("url", "https://example.com:80/", "https://example.com:80/"),
    ("url", "http://example.com:8080/a", "http://example.com:8080/a"),
    ("url", "http://example.com/?b=2&a=1", "http://example.com/?b=2&a=1"),
    ("url", "http://Bücher.example/ü", "http://xn--bcher-kva.example/ü"),
    ("url", "http://User:Pw@Example.com/", "http://User:Pw@example.com/"),
    ("url", "http://@example.com/", "http://example.com/"),
    ("url", "http://[2001:DB8:0::1]:80/x", "http://[2001:db8::1]/x"),
    ("url", "http://192.0.2.1:8000/", "http://192.0.2.1:8000/"),
    ("url", "http://example.com./", "http://example.com/"),
    ("domain", "Example.COM.", "example.com"),
    ("domain", "straße.de", "xn--strae-oqa.de"),
    ("domain", "例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ("domain", "xn--R8JZ45G.xn--zckzah", "xn--r8jz45g.xn--zckzah"),
    ("domain", "EXAMPLE。com", "example.com"),
    ("domain", "_dmarc.mail-1.example.com", "_dmarc.mail-1.example.com"),
    ("domain", f"{'a' * 63}.com", f"{'a' * 63}.com"),
    ("raw_text", "  Buy   NOW\n at example.com \n", "Buy   NOW\n at example.com"),
    ("raw_text", "Ünïcödé ✓", "Ünïcödé ✓"),
    ("raw_text", "x" * MAX_RAW_TEXT_CHARS, "x" * MAX_RAW_TEXT_CHARS),
]


@pytest.mark.parametrize(("type_name", "given", "canonical"), ACCEPTED)
def test_it_accepts_each_spelling_and_gives_its_canonical_form(type_name, given, canonical):
    assert canonicalise(type_name, given) == canonical
    # Canonical means a fixed point: the stored form reads back as itself.
    assert canonicalise(type_name, canonical) == canonical
    assert SIGNAL_TYPES[type_name].canonical(given) == canonical


REFUSED = [
    ("pdq", REAL_PDQ[:-1], "pdq: expected 64 hex digits, got 63"),
    ("pdq", REAL_PDQ + "0", "pdq: expected 64 hex digits, got 65"),
    ("pdq", "g" * 64, "pdq: expected 64 hex digits, got 'g'"),
    ("pdq", "0x" + REAL_PDQ[2:], "pdq: expected 64 hex digits, got 'x'"),
    ("pdq", REAL_PDQ[:32] + " " + REAL_PDQ[33:], "pdq: expected 64 hex digits, got ' '"),
    ("md5", MD5[:31], "md5: expected 32 hex digits, got 31"),
    ("sha1", SHA256, "sha1: expected 40 hex digits, got 64"),
    ("sha256", SHA1, "sha256: expected 64 hex digits, got 40"),
    ("video_md5", "\uff10" * 32, "video_md5: expected 32 hex digits, got '\uff10'"),
    ("photodna", PHOTODNA_B64[:-4], "photodna: expected 144 bytes, got 141"),
    ("photodna", base64.b64encode(PHOTODNA[:143]).decode().rstrip("="), "got 143"),
    ("photodna", "not base64!", "photodna: expected base64 or 144 comma-separated numbers"),
    ("photodna", "é" * 192, "photodna: expected base64 or 144 comma-separated numbers"),
    ("photodna", PHOTODNA_B64[:96] + " " + PHOTODNA_B64[96:], "photodna: expected base64"),
    ("photodna", ",".join(["1"] * 143), "photodna: expected 144 comma-separated numbers, got 143"),
    ("photodna", ",".join(["256"] + ["1"] * 143), "photodna: comma-separated numbers must be"),
    ("photodna", ",".join(["-1"] + ["1"] * 143), "from 0 to 255"),
    ("photodna", ",".join(["1.5"] + ["1"] * 143), "from 0 to 255"),
    ("url", "ftp://example.com/", "url: only http and https URLs are accepted, scheme: 'ftp'"),
    ("url", "javascript:alert(1)", "scheme: 'javascript'"),
    ("url", "example.com/path", "url: only http and https URLs are accepted, scheme: none"),
    ("url", "http:///path", "url: URL has no host"),
    ("url", "http://exa mple.com/", "url: URL contains whitespace or control characters"),
    ("url", "http://example.com/a b", "url: URL contains whitespace"),
    ("url", "http://example.com/a\tb", "url: URL contains whitespace"),
    ("url", "http://example.com:99999/", "url: port must be a number from 1 to 65535"),
    ("url", "http://example.com:http/", "url: port must be"),
    ("url", "http://example.com:" + "1" * 5000, "url: port must be"),
    ("url", "http://localhost/", "url: a domain needs at least two labels"),
    ("url", "http://999.0.2.1/", "url: host is not a valid IP address"),
    ("url", "http://[::1/", "url: not a valid URL"),
    ("url", "http://exa_mple.com!/", "may hold only letters, digits, hyphens and underscores"),
    ("domain", "localhost", "domain: a domain needs at least two labels, as in example.com"),
    ("domain", "-bad.example.com", "domain: label '-bad' may hold only"),
    ("domain", "bad-.example.com", "may not start or end with a hyphen"),
    ("domain", "a..example.com", "domain: empty label"),
    ("domain", ".example.com", "domain: empty label"),
    ("domain", f"{'a' * 64}.com", "domain: label longer than 63 characters"),
    ("domain", ".".join(["a" * 63] * 4), "domain: longer than 253 characters"),
    ("domain", "192.0.2.1", "domain: an IP address is not a domain"),
    ("domain", "exa mple.com", "domain: label 'exa mple' may hold only"),
    ("domain", "https://example.com/", "may hold only"),
    ("domain", "xn--zz.com", "domain: not a valid internationalised label"),
    ("domain", "a\u200db.com", "domain: not a valid internationalised label"),
    ("raw_text", " \n\t ", "raw_text: empty value"),
    ("raw_text", "", "raw_text: empty value"),
    ("raw_text", "x" * (MAX_RAW_TEXT_CHARS + 1), "raw_text: longer than 4096 characters (4097)"),
    ("raw_text", "bad\x00byte", "raw_text: contains a NUL character"),
    ("raw_text", "lone \ud800 surrogate", "raw_text: not valid Unicode text"),
    ("md5", 1234, "md5: expected a string, got int"),
    ("md5", None, "md5: expected a string, got NoneType"),
]


@pytest.mark.parametrize(("type_name", "given", "reason"), REFUSED)
def test_it_refuses_a_malformed_value_with_its_reason(type_name, given, reason):
    assert reason in refusal(type_name, given)


@pytest.mark.parametrize("type_name", SIGNAL_TYPES)
def test_it_refuses_an_oversized_value_before_parsing_it(type_name):
    # Spaces would be a format error for most types: the size is what must be named.
    bound = SIGNAL_TYPES[type_name].max_bytes  # MAX_VALUE_BYTES but for vpdq's videos
    assert refusal(type_name, " " * (bound + 1)) == f"{type_name}: longer than {bound} bytes"


def test_the_size_bound_counts_bytes_not_characters():
    text = "é" * (MAX_VALUE_BYTES // 2 + 1)  # fewer characters than the bound, more bytes
    assert refusal("raw_text", text) == f"raw_text: longer than {MAX_VALUE_BYTES} bytes"


def test_it_refuses_an_unknown_type_and_names_the_known_ones():
    reason = refusal("sha512", SHA256)
    assert reason == (
        "unknown signal type 'sha512'; known types: "
        "pdq, md5, sha1, sha256, video_md5, photodna, url, domain, raw_text, vpdq"
    )


def test_type_names_are_exact_not_case_folded():
    assert refusal("PDQ", REAL_PDQ).startswith("unknown signal type 'PDQ'")


def test_a_type_name_that_is_not_a_string_is_an_unknown_type():
    assert refusal(["pdq"], REAL_PDQ).startswith("unknown signal type ['pdq']")


def test_every_real_pdq_hash_of_the_reference_haystack_is_accepted_as_it_is():
    assert len(HAYSTACK) == 1350
    for value in HAYSTACK:
        assert canonicalise("pdq", value) == value
        assert canonicalise("pdq", f" {value.upper()}\r\n") == value


@pytest.mark.parametrize(("key", "reason"), WARNINGLIST.items(), ids=lambda k: str(k)[:20])
def test_it_refuses_a_warninglisted_value_naming_the_warninglist(key, reason):
    type_name, value = key
    assert refusal(type_name, value) == f"{type_name}: refused by the warninglist: {reason}"
    # Any spelling of it: the check runs on the canonical form.
    assert "refused by the warninglist" in refusal(type_name, f"  {value.upper()} ")


@pytest.mark.parametrize(("key", "reason"), WARNINGLIST.items(), ids=lambda k: str(k)[:20])
def test_canonical_alone_accepts_a_warninglisted_value_so_that_lookups_of_it_work(key, reason):
    type_name, value = key
    assert SIGNAL_TYPES[type_name].canonical(value) == value


def test_the_warninglist_holds_the_real_hashes_of_the_empty_file():
    assert ("md5", hashlib.md5(b"", usedforsecurity=False).hexdigest()) in WARNINGLIST
    assert ("video_md5", hashlib.md5(b"", usedforsecurity=False).hexdigest()) in WARNINGLIST
    assert ("sha1", hashlib.sha1(b"", usedforsecurity=False).hexdigest()) in WARNINGLIST
    assert ("sha256", hashlib.sha256(b"").hexdigest()) in WARNINGLIST
    assert ("pdq", "0" * 64) in WARNINGLIST


def test_warninglist_values_are_canonical_or_they_could_never_match():
    for type_name, value in WARNINGLIST:
        assert SIGNAL_TYPES[type_name].canonical(value) == value


@pytest.mark.parametrize("quality", [50, 77, 100])
def test_a_pdq_hash_of_quality_50_or_more_is_accepted(quality):
    assert canonicalise("pdq", REAL_PDQ, quality=quality) == REAL_PDQ


@pytest.mark.parametrize("quality", [0, 49])
def test_a_pdq_hash_below_quality_50_is_warninglisted(quality):
    assert refusal("pdq", REAL_PDQ, quality=quality) == (
        f"pdq: refused by the warninglist: quality {quality} is below 50, "
        "too unreliable to match on"
    )


@pytest.mark.parametrize("quality", [-1, 101, True, 75.0, "80"])
def test_a_pdq_quality_outside_0_to_100_or_not_a_whole_number_is_refused(quality):
    assert refusal("pdq", REAL_PDQ, quality=quality).startswith(
        "pdq: quality must be a whole number from 0 to 100"
    )


def test_quality_given_for_another_type_is_an_error():
    assert refusal("md5", MD5, quality=90) == "md5: quality applies to pdq only"


def test_a_malformed_value_is_reported_before_its_quality():
    assert refusal("pdq", "abc", quality=10) == "pdq: expected 64 hex digits, got 3"


def test_the_types_are_published_in_a_stable_order():
    assert [entry["name"] for entry in describe_types()] == [
        "pdq",
        "md5",
        "sha1",
        "sha256",
        "video_md5",
        "photodna",
        "url",
        "domain",
        "raw_text",
        "vpdq",
    ]
    assert list(SIGNAL_TYPES) == [entry["name"] for entry in describe_types()]


def test_only_pdq_is_compared_by_hamming_distance_never_above_31():
    published = {entry["name"]: entry for entry in describe_types()}
    assert published["pdq"] == {
        "name": "pdq",
        "description": SIGNAL_TYPES["pdq"].description,
        "comparison": "hamming",
        "default_threshold": 31,
        "max_threshold": 31,
    }
    for name, entry in published.items():
        assert entry.keys() == published["pdq"].keys()
        assert isinstance(entry["description"], str) and entry["description"]
        if name not in ("pdq", "vpdq"):
            assert entry["comparison"] == "exact"
            assert entry["default_threshold"] is None and entry["max_threshold"] is None


# python-threatexchange: the library HMA and the `threatexchange` CLI use. Its validators must
# take our canonical output unchanged, or values we send them would be refused or re-spelled.

SHARED_WITH_PTX = [
    ("pdq", "signal_type.pdq.signal", "PdqSignal"),
    ("video_md5", "signal_type.md5", "VideoMD5Signal"),
    ("url", "signal_type.url", "URLSignal"),
    ("raw_text", "signal_type.raw_text", "RawTextSignal"),
]


@pytest.mark.parametrize(("type_name", "module", "class_name"), SHARED_WITH_PTX)
def test_our_type_names_are_python_threatexchanges_names(type_name, module, class_name):
    assert ptx(module, class_name).get_name() == type_name


# Our sha256 has the format of its video_sha256 (the name differs: ours is any file).
PTX_VALIDATORS = [*SHARED_WITH_PTX, ("sha256", "signal_type.sha256", "VideoSHA256Signal")]


@pytest.mark.parametrize(("type_name", "module", "class_name"), PTX_VALIDATORS)
def test_python_threatexchange_accepts_our_canonical_output_unchanged(
    type_name, module, class_name
):
    signal_class = ptx(module, class_name)
    spellings = [given for name, given, _ in ACCEPTED if name == type_name]
    assert spellings
    for given in spellings:
        canonical = canonicalise(type_name, given)
        assert signal_class.validate_signal_str(canonical) == canonical


@pytest.mark.parametrize(("type_name", "module", "class_name"), PTX_VALIDATORS)
def test_python_threatexchanges_examples_pass_except_the_warninglisted_ones(
    type_name, module, class_name
):
    for example in ptx(module, class_name).get_examples():
        if (type_name, example) in WARNINGLIST:
            assert "refused by the warninglist" in refusal(type_name, example)
        else:
            assert canonicalise(type_name, example) == example


def test_pdq_threshold_and_quality_floor_agree_with_python_threatexchange():
    threshold = ptx("signal_type.pdq.pdq_utils", "PDQ_CONFIDENT_MATCH_THRESHOLD")
    assert SIGNAL_TYPES["pdq"].max_threshold == threshold
    assert ptx("signal_type.pdq.signal", "PdqSignal").QUALITY_THRESHOLD == PDQ_MIN_QUALITY


@pytest.mark.parametrize(("colour", "expected"), [("black", "0" * 64), ("white", WHITE_IMAGE_PDQ)])
def test_the_pdq_hash_of_a_blank_image_is_warninglisted(colour, expected):
    pdq_from_bytes = ptx("signal_type.pdq.pdq_hasher", "pdq_from_bytes")
    image = pytest.importorskip("PIL.Image", reason=PTX_MISSING)
    png = io.BytesIO()
    image.new("RGB", (640, 480), colour).save(png, "PNG")
    value, quality = pdq_from_bytes(png.getvalue())
    assert (value, quality) == (expected, 0)
    assert "refused by the warninglist" in refusal("pdq", value)
    assert "refused by the warninglist" in refusal("pdq", value, quality=quality)


def test_a_real_photo_hashed_by_python_threatexchange_is_accepted_with_its_quality():
    pdq_from_bytes = ptx("signal_type.pdq.pdq_hasher", "pdq_from_bytes")
    value, quality = pdq_from_bytes((PDQ_DATA / "bridge-mods" / "aaa-orig.jpg").read_bytes())
    assert quality >= 50
    assert canonicalise("pdq", value, quality=quality) == value
