"""The exchange's entries as STIX 2.1 (what TAXII serves), without touching the database.

One Indicator per set entry, its latest state:

- ``id``: ``indicator--`` and a UUID that holds the entry's id (``indicator_id``): the same
  entry always has the same id, so a re-fetch updates the indicator rather than duplicating it,
  and an id asked for is read back without a search.
- ``created`` is when the entry was first seen, ``modified`` (the version) when it last changed;
  a retracted or expired entry is a new version with ``revoked: true``.
- ``pattern``: STIX patterning over the SCO that fits: ``file:hashes.MD5`` / ``'SHA-1'`` /
  ``'SHA-256'`` for ``md5``, ``sha1``, ``sha256`` and ``video_md5`` (an MD5 of a video file's
  bytes); ``url:value``; ``domain-name:value``. Hashes STIX does not name are custom hash keys
  of ``file:hashes``: ``x_pdq`` (64 hex digits), ``x_photodna`` (base64), ``x_vpdq`` (a
  video's frames, python-threatexchange's JSON list of "pdq,quality,timestamp"); ``raw_text`` is the
  custom SCO property ``x-hashx-raw-text:value``.
- ``object_marking_refs``: the set's TLP 2.0 level as the official STIX TLP 2.0 marking
  definitions (the ids of the OASIS TLP 2.0 extension).
- ``labels``: the entry's labels; the opinion aggregate and the rest in custom properties:
  ``x_hashx_signal_type``, ``x_hashx_value``, ``x_hashx_set``, ``x_hashx_entry``,
  ``x_hashx_contributors`` (a count), ``x_hashx_contributor_names`` (only where the set names
  them), ``x_hashx_opinions`` (``{"positive", "negative", "investigation_seed"}`` counts),
  ``x_hashx_disputed`` (positive and negative opinions both given), ``x_hashx_near_duplicate_of``.
"""

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

STIX_MEDIA_TYPE = "application/stix+json;version=2.1"

# The official STIX 2.1 marking definitions of TLP 2.0 (OASIS TLP 2.0 extension,
# extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d), by the sets' tlp values.
TLP_MARKINGS = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}

# (object path) for each signal type.
_PATHS = {
    "md5": "file:hashes.MD5",
    "video_md5": "file:hashes.MD5",
    "sha1": "file:hashes.'SHA-1'",
    "sha256": "file:hashes.'SHA-256'",
    "pdq": "file:hashes.x_pdq",
    "photodna": "file:hashes.x_photodna",
    "url": "url:value",
    "domain": "domain-name:value",
    "raw_text": "x-hashx-raw-text:value",
    "vpdq": "file:hashes.x_vpdq",
}

# Name-based ids (UUIDv5) of collections and indicators, in this exchange's namespace.
_NAMESPACE = uuid.UUID("8f0c6f3e-5d0b-4a51-9a63-6a0f3c1e2b7d")


def uuid5(name: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, name))``, in a third of its time (a page of TAXII makes
    one per object)."""
    name_hash = hashlib.sha1(_NAMESPACE.bytes + name.encode(), usedforsecurity=False)
    digest = bytearray(name_hash.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def collection_id(exchange_id: str, slug: str) -> str:
    return uuid5(f"{exchange_id}/sets/{slug}")


# An entry id fits the low 62 bits of an indicator's UUID.
_ENTRY_BITS = 62


def indicator_id(exchange_id: str, entry_id: int) -> str:
    """The indicator of an entry, a UUID laid out as RFC 9562's version 8 (its own content) but
    marked version 4, as STIX recommends for SDOs (the STIX schema accepts versions 1 to 5
    only): the entry id in its low 62 bits, so that an id asked for is read back without a
    search, under 60 bits of the SHA-1 of this exchange's name for the entry, so that two
    exchanges' ids differ and an id nobody was given is refused (``entry_of_indicator``)."""
    name = f"{_NAMESPACE}/{exchange_id}/entries/{entry_id}".encode()
    check = int.from_bytes(hashlib.sha1(name, usedforsecurity=False).digest()[:8]) >> 4
    value = (check >> 12) << 80 | 0x4 << 76 | (check & 0xFFF) << 64 | 0b10 << 62 | entry_id
    h = f"{value:032x}"
    return f"indicator--{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def entry_of_indicator(exchange_id: str, stix_id: str) -> int | None:
    """The entry id an indicator id of this exchange names, or None for any other string."""
    if not stix_id.startswith("indicator--") or len(stix_id) != 47:
        return None
    try:
        value = uuid.UUID(stix_id.removeprefix("indicator--")).int
    except ValueError:
        return None
    entry_id = value & ((1 << _ENTRY_BITS) - 1)
    if entry_id < 1 or indicator_id(exchange_id, entry_id) != stix_id.lower():
        return None
    return entry_id


def timestamp(value: str | datetime) -> str:
    """A STIX timestamp (UTC, ``Z``, always six fractional digits, so that versions compare as
    strings) of a Postgres JSON timestamp or a datetime (both with a zone)."""
    if isinstance(value, str) and value.endswith("+00:00"):
        # The feed's session runs in UTC: the common case, without parsing.
        moment, _, fraction = value[:-6].partition(".")
        return f"{moment}.{fraction:0<6}Z"
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pattern(signal_type: str, value: str) -> str:
    return f"[{_PATHS[signal_type]} = {_literal(value)}]"


def indicator(exchange_id: str, record: dict[str, Any], tlp: str) -> dict[str, Any]:
    """The Indicator of one change record as the feed renders it (signals.feed.reads)."""
    created = timestamp(record["first_seen"])
    modified = max(timestamp(record["updated"]), created)
    obj: dict[str, Any] = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": indicator_id(exchange_id, record["entry"]),
        "created": created,
        "modified": modified,
        "name": f"{record['type']} in {record['set']}",
        "description": f"A {record['type']} signal shared in the set {record['set']}",
        "indicator_types": ["malicious-activity"],
        "pattern": pattern(record["type"], record["value"]),
        "pattern_type": "stix",
        "valid_from": created,
    }
    if record["expires_at"] is not None and timestamp(record["expires_at"]) > created:
        obj["valid_until"] = timestamp(record["expires_at"])
    if record["state"] != "active":
        obj["revoked"] = True
    if record["labels"]:
        obj["labels"] = record["labels"]
    obj["object_marking_refs"] = [TLP_MARKINGS[tlp]]
    obj["x_hashx_signal_type"] = record["type"]
    obj["x_hashx_value"] = record["value"]
    obj["x_hashx_set"] = record["set"]
    obj["x_hashx_entry"] = record["entry"]
    obj["x_hashx_contributors"] = record["contributors"]
    if record.get("contributor_names"):
        obj["x_hashx_contributor_names"] = record["contributor_names"]
    obj["x_hashx_opinions"] = record["opinions"]
    obj["x_hashx_disputed"] = record["disputed"]
    if record["near_duplicate_of"] is not None:
        obj["x_hashx_near_duplicate_of"] = indicator_id(exchange_id, record["near_duplicate_of"])
    return obj
