"""The vpdq signal type: python-threatexchange's serialisation of a vPDQ hash (a JSON list of
"pdq hex,quality,timestamp" strings, one per sampled frame), validated, canonical, and its
warninglist. Pure: no database."""

import json

import pytest
from threatexchange.signal_type.pdq.signal import PdqSignal

from signals.types import (
    MAX_VPDQ_BYTES,
    MAX_VPDQ_FRAMES,
    SIGNAL_TYPES,
    SignalTypeError,
    canonicalise,
)
from signals.warninglist import BLANK_IMAGE_PDQ, WHITE_IMAGE_PDQ
from tests.signals.test_types import HAYSTACK

VPDQ = SIGNAL_TYPES["vpdq"]


def video(*frames: tuple[str, object, object]) -> str:
    return json.dumps([f"{h},{q},{t}" for h, q, t in frames])


def refusal(value: str) -> str:
    with pytest.raises(SignalTypeError) as caught:
        canonicalise("vpdq", value)
    return str(caught.value)


def test_threatexchanges_example_is_its_own_canonical_spelling():
    # VPDQSignal.get_examples() as python-threatexchange builds it (its vpdq module needs the
    # vpdq package to import): PdqSignal's examples, one a second, quality 100.
    example = json.dumps([f"{h},100,{float(t):.3}" for t, h in enumerate(PdqSignal.get_examples())])
    assert canonicalise("vpdq", example) == example


def test_the_canonical_spelling_is_threatexchanges_lowercase_and_timestamps_to_3_digits():
    given = video((HAYSTACK[0].upper(), 90, "0"), (HAYSTACK[1], "100", "1.23456"),
                  (HAYSTACK[2], 77, 123.4))  # fmt: skip
    assert json.loads(canonicalise("vpdq", f"  {given}\n")) == [
        f"{HAYSTACK[0]},90,0.0",
        f"{HAYSTACK[1]},100,1.23",
        f"{HAYSTACK[2]},77,1.23e+02",
    ]
    # Canonical values are fixed points: canonicalising again changes nothing.
    canonical = canonicalise("vpdq", given)
    assert canonicalise("vpdq", canonical) == canonical
    # Two spellings of one video are one value (so one signal, deduplicated).
    respelled = json.dumps([f" {HAYSTACK[0]} ,090, 0.000", f"{HAYSTACK[1]},100,1.2300",
                            f"{HAYSTACK[2]},77,123.40"])  # fmt: skip
    assert canonicalise("vpdq", respelled) == canonical


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not json", 'expected a JSON list of "pdq,quality,timestamp" strings'),
        ('{"0": {}}', 'expected a JSON list of "pdq,quality,timestamp" strings'),
        ("[1, 2]", 'expected a JSON list of "pdq,quality,timestamp" strings'),
        ("[]", f"expected 1 to {MAX_VPDQ_FRAMES} frames (an hour at one frame a second), got 0"),
        (video((HAYSTACK[0][:63], 100, 0)), "frame 0: expected 64 hex digits"),
        (video((HAYSTACK[0][:63] + "g", 100, 0)), "frame 0: expected 64 hex digits"),
        (json.dumps([f"{HAYSTACK[0]},100"]), 'frame 0: expected "pdq,quality,timestamp"'),
        (video((HAYSTACK[0], 101, 0)), "frame 0: quality must be a whole number from 0 to 100"),
        (video((HAYSTACK[0], -1, 0)), "frame 0: quality must be a whole number from 0 to 100"),
        (video((HAYSTACK[0], 99.5, 0)), "frame 0: quality must be a whole number from 0 to 100"),
        (video((HAYSTACK[0], 100, "x")), "frame 0: timestamp is not a number"),
        (video((HAYSTACK[0], 100, "nan")), "frame 0: timestamp must be a number of seconds >= 0"),
        (video((HAYSTACK[0], 100, -1)), "frame 0: timestamp must be a number of seconds >= 0"),
        (video((HAYSTACK[0], 100, 2), (HAYSTACK[1], 100, 1)),
         "frame 1: timestamps must not decrease"),
    ],
)  # fmt: skip
def test_it_refuses_a_malformed_video_with_its_reason(value, reason):
    assert refusal(value) == f"vpdq: {reason}"


def test_a_video_holds_up_to_an_hour_of_frames_in_at_most_the_byte_bound():
    assert MAX_VPDQ_FRAMES == 3600
    hashes = [f"{n:064x}" for n in range(MAX_VPDQ_FRAMES + 1)]
    # The longest canonical spelling of a frame: quality 100, the longest timestamp.
    longest = json.dumps([f"{h},100,1.23e-310" for h in hashes[:MAX_VPDQ_FRAMES]])
    assert canonicalise("vpdq", longest) == longest and len(longest) == 295_200
    assert len(longest) < MAX_VPDQ_BYTES
    one_more = json.dumps([f"{h},100,1.23e-310" for h in hashes])
    assert refusal(one_more) == (
        f"vpdq: expected 1 to {MAX_VPDQ_FRAMES} frames (an hour at one frame a second),"
        f" got {MAX_VPDQ_FRAMES + 1}"
    )
    # The bytes are bounded before the value is parsed at all.
    padded = json.dumps([f"{h},100,{'0' * 140}1" for h in hashes[:MAX_VPDQ_FRAMES]])
    assert refusal(padded) == f"vpdq: longer than {MAX_VPDQ_BYTES} bytes"


def test_a_video_of_only_blank_or_low_quality_frames_is_warninglisted():
    blank = video((BLANK_IMAGE_PDQ, 0, 0), (WHITE_IMAGE_PDQ, 100, 1), (HAYSTACK[0], 49, 2))
    assert "refused by the warninglist: every frame is blank or below quality 50" in refusal(blank)
    # One usable frame is enough to be matched on.
    usable = video((BLANK_IMAGE_PDQ, 0, 0), (HAYSTACK[0], 50, 1))
    assert canonicalise("vpdq", usable) == VPDQ.canonical(usable)


def test_vpdq_is_matched_by_hamming_distance_within_pdqs_threshold():
    assert (VPDQ.comparison, VPDQ.default_threshold, VPDQ.max_threshold) == ("hamming", 31, 31)
