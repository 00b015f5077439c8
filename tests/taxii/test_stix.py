"""The STIX forms of entries, without a database."""

import json
import uuid

import stix2
from stix2validator import ValidationOptions, validate_instance

from signals.types import SIGNAL_TYPES
from taxii.misp import ATTRIBUTE_TYPES
from taxii.stix import (
    _NAMESPACE,
    entry_of_indicator,
    indicator,
    indicator_id,
    pattern,
    timestamp,
    uuid5,
)


def record(**changes):
    return {
        "entry": 7, "set": "acme-csam", "type": "pdq", "value": "f" * 64, "state": "active",
        "labels": [], "contributors": 2, "contributor_names": [],
        "opinions": {"positive": 1, "negative": 1, "investigation_seed": 0}, "disputed": True,
        "first_seen": "2026-12-01T10:00:00+00:00", "updated": "2026-12-02T10:00:00.5+00:00",
        "expires_at": None, "near_duplicate_of": None, **changes,
    }  # fmt: skip


def test_ids_are_the_uuid5_of_the_standard_library():
    for name in ("ex/entries/1", "ex/sets/acme-csam", "é/entries/99999999999"):
        assert uuid5(name) == str(uuid.uuid5(_NAMESPACE, name))


def test_timestamps_are_utc_with_six_fractional_digits():
    assert timestamp("2026-12-02T10:00:00.5+00:00") == "2026-12-02T10:00:00.500000Z"
    assert timestamp("2026-12-02T10:00:00+00:00") == "2026-12-02T10:00:00.000000Z"
    assert timestamp("2026-12-02T12:00:00.25+02:00") == "2026-12-02T10:00:00.250000Z"


def test_every_signal_type_is_a_valid_indicator_and_values_are_escaped():
    values = {
        "pdq": "f" * 64, "md5": "a" * 32, "video_md5": "b" * 32, "sha1": "c" * 40,
        "sha256": "d" * 64, "photodna": "AAAA" * 36, "url": "https://x.example/it's\\a",
        "domain": "x.example", "raw_text": "say 'hi'",
        "vpdq": json.dumps([f"{'e' * 64},100,0.0", f"{'e' * 64},90,1.0"]),
    }  # fmt: skip
    assert values.keys() == SIGNAL_TYPES.keys()
    for kind, value in values.items():
        obj = indicator("ex", record(type=kind, value=value), "amber+strict")
        stix2.parse(obj, allow_custom=True)
        result = validate_instance(obj, ValidationOptions(version="2.1"))
        assert result.errors == [], (kind, [str(e) for e in result.errors])
    assert pattern("url", "https://x.example/it's\\a") == (
        "[url:value = 'https://x.example/it\\'s\\\\a']"
    )


def test_every_signal_type_has_a_misp_attribute_type():
    assert ATTRIBUTE_TYPES.keys() == SIGNAL_TYPES.keys()


def test_a_tombstone_is_revoked_and_expiry_bounds_validity():
    obj = indicator("ex", record(state="tombstone", expires_at="2027-01-01T00:00:00+00:00"), "red")
    assert obj["revoked"] is True and obj["valid_until"] == "2027-01-01T00:00:00.000000Z"
    assert obj["x_hashx_disputed"] is True and "x_hashx_contributor_names" not in obj
    assert obj["object_marking_refs"] == [
        "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"
    ]


def test_an_indicator_id_names_its_entry_and_nothing_else_reads_as_one():
    for entry_id in (1, 7, 123_456_789, 2**62 - 1):
        stix_id = indicator_id("hx-one", entry_id)
        parsed = uuid.UUID(stix_id.removeprefix("indicator--"))
        # STIX 2.1 asks for an RFC 4122 UUID, and its schema for versions 1 to 5.
        assert (parsed.variant, parsed.version) == (uuid.RFC_4122, 4)
        assert entry_of_indicator("hx-one", stix_id) == entry_id
        assert entry_of_indicator("hx-one", stix_id.upper().replace("INDICATOR", "indicator"))
        assert entry_of_indicator("hx-two", stix_id) is None  # another exchange's
    assert indicator_id("hx-one", 7) != indicator_id("hx-two", 7)
    made_up = indicator_id("hx-one", 7)[:-1] + (
        "0" if indicator_id("hx-one", 7)[-1] != "0" else "1"
    )
    for other in (
        made_up,
        "indicator--not-a-uuid",
        f"malware--{uuid.uuid4()}",
        "",
        "x" * 47,
        f"indicator--{uuid.uuid4()}",
        f"indicator--{uuid.UUID(int=0)}",
    ):
        assert entry_of_indicator("hx-one", other) is None, other
