"""A set as a MISP feed (MISP's own feed format: ``manifest.json``, ``hashes.csv`` and one
event JSON per set and UTC month), without touching the database.

- One event per set and UTC month in which its entries were first seen; the event's uuid is
  the UUIDv5 of the exchange's id, the set's slug and the month, so it never changes and MISP
  updates it rather than adding another. Its ``timestamp`` is the newest change among its
  entries: a retraction moves it, and MISP fetches the event again.
- One attribute per entry, its uuid the indicator's UUID in TAXII (``indicator_id``: it
  holds the entry's id). A retracted or expired entry stays in its event with
  ``"deleted": true`` (MISP soft-deletes the attribute it holds) until its tombstone is purged,
  and leaves ``hashes.csv`` at once.
- Types, from MISP's describeTypes: ``md5`` (and ``video_md5``, an MD5 of a video file's
  bytes), ``sha1``, ``sha256`` and ``url``, ``domain`` are MISP's own types, ``to_ids`` true.
  MISP has no type for perceptual hashes: ``pdq`` is a ``hex`` attribute (64 hex digits) and
  ``photodna``, ``raw_text`` and ``vpdq`` (a video's frames, python-threatexchange's JSON) are
  ``text`` attributes, ``to_ids`` false (they are not exact
  IDS matches), each tagged ``hashx:signal-type="<type>"`` and commented with its type.
- Tags: the set's TLP as MISP's ``tlp`` taxonomy on the event; on each attribute its labels
  (``hashx:label="<label>"``), its signal type, and ``hashx:disputed`` when members' opinions
  disagree; the comment carries the opinion counts.
"""

import hashlib
import uuid
from datetime import datetime
from typing import Any

from taxii.stix import indicator_id

_NAMESPACE = uuid.UUID("0d4c1b2e-9f7a-4e63-8b35-2c1e5a7f9d40")

# signal type -> (MISP attribute type, category, to_ids)
ATTRIBUTE_TYPES = {
    "md5": ("md5", "Payload delivery", True),
    "video_md5": ("md5", "Payload delivery", True),
    "sha1": ("sha1", "Payload delivery", True),
    "sha256": ("sha256", "Payload delivery", True),
    "url": ("url", "Network activity", True),
    "domain": ("domain", "Network activity", True),
    "pdq": ("hex", "Payload delivery", False),
    "photodna": ("text", "Payload delivery", False),
    "raw_text": ("text", "Other", False),
    "vpdq": ("text", "Payload delivery", False),
}

TLP_TAGS = {
    "clear": ("tlp:clear", "#ffffff"),
    "green": ("tlp:green", "#339900"),
    "amber": ("tlp:amber", "#ffc000"),
    "amber+strict": ("tlp:amber+strict", "#ffc000"),
    "red": ("tlp:red", "#cc0033"),
}


def event_uuid(exchange_id: str, slug: str, month: datetime) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{exchange_id}/misp/{slug}/{month:%Y-%m}"))


def _epoch(value: str | datetime) -> str:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return str(int(moment.timestamp()))


def _tag(name: str, colour: str = "#0088cc") -> dict[str, Any]:
    return {"name": name, "colour": colour, "exportable": True}


def _orgc(exchange_id: str, name: str) -> dict[str, str]:
    return {"name": name, "uuid": str(uuid.uuid5(_NAMESPACE, f"{exchange_id}/org"))}


def _event_head(
    exchange_id: str, exchange_name: str, hash_set: Any, month: datetime, updated: datetime
) -> dict[str, Any]:
    return {
        "Orgc": _orgc(exchange_id, exchange_name),
        "Tag": [_tag(*TLP_TAGS[hash_set.tlp])],
        "info": f"{hash_set.name} ({hash_set.slug}), entries first seen {month:%Y-%m}",
        "date": f"{month:%Y-%m-%d}",
        "analysis": 2,
        "threat_level_id": 4,
        "timestamp": _epoch(updated),
    }


def manifest_entry(
    exchange_id: str, exchange_name: str, hash_set: Any, month: datetime, updated: datetime
) -> tuple[str, dict[str, Any]]:
    """One event of ``manifest.json``: its uuid and what MISP reads of it."""
    head = _event_head(exchange_id, exchange_name, hash_set, month, updated)
    return event_uuid(exchange_id, hash_set.slug, month), head


def attribute(exchange_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """The attribute of one change record as the feed renders it (signals.feed.reads)."""
    kind, category, to_ids = ATTRIBUTE_TYPES[record["type"]]
    opinions = record["opinions"]
    tags = [_tag(f'hashx:signal-type="{record["type"]}"')]
    tags += [_tag(f'hashx:label="{label}"') for label in record["labels"]]
    if record["disputed"]:
        tags.append(_tag("hashx:disputed", "#cc0033"))
    return {
        "uuid": indicator_id(exchange_id, record["entry"]).removeprefix("indicator--"),
        "type": kind,
        "category": category,
        "value": record["value"],
        "to_ids": to_ids and record["state"] == "active",
        "deleted": record["state"] != "active",
        "timestamp": _epoch(record["updated"]),
        "first_seen": record["first_seen"],
        "comment": (
            f"{record['type']} in {record['set']}; {record['contributors']} contributor(s);"
            f" opinions: {opinions['positive']} positive, {opinions['negative']} negative,"
            f" {opinions['investigation_seed']} investigation seed"
        ),
        "disable_correlation": False,
        "Tag": tags,
    }


def event(
    exchange_id: str,
    exchange_name: str,
    hash_set: Any,
    month: datetime,
    updated: datetime,
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    """The event JSON of a set's month: ``{"Event": {...}}``."""
    head = _event_head(exchange_id, exchange_name, hash_set, month, updated)
    return {
        "Event": {
            "uuid": event_uuid(exchange_id, hash_set.slug, month),
            **head,
            "published": True,
            "publish_timestamp": head["timestamp"],
            "Attribute": [attribute(exchange_id, r) for r in records],
        }
    }


def hashes_line(value: str, event: str) -> str:
    """A line of ``hashes.csv``: the MD5 of an active attribute's value, and its event."""
    return f"{hashlib.md5(value.encode()).hexdigest()},{event}\n"  # noqa: S324 - MISP's format
