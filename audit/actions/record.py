"""``record``: the one way anything writes to the audit log."""

import json
from datetime import UTC
from typing import Any, TypedDict, Unpack

from django.conf import settings
from django.db import connection, models
from django.http import HttpRequest
from django.utils import timezone

from audit.models import AuditEvent
from exchange.enqueue import enqueue_once_on_commit
from exchange.logs import current_request_id
from exchange.middleware import client_ip


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8. What the chain hashes and the
    checkpoints sign."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _bounded(details: dict[str, Any]) -> dict[str, Any]:
    size = len(canonical_json(details))
    limit = settings.HASHX_AUDIT_MAX_DETAILS_BYTES
    if size <= limit:
        return details
    preview = canonical_json(details)[: limit // 2].decode("utf-8", "ignore")
    return {"truncated": True, "size": size, "preview": preview}


def _actor_from(request: Any) -> tuple[Any, str, Any]:
    """(organisation, key id, staff user) of whoever made the request, if anyone."""
    user = getattr(request, "user", None)
    organisation = getattr(user, "organisation", None)
    if organisation is not None:
        key = getattr(user, "key", None)
        return organisation, getattr(key, "key_id", ""), None
    if user is not None and getattr(user, "is_authenticated", False) and getattr(user, "pk", None):
        return None, "", user
    return None, "", None


# One plain INSERT of the event's columns but its id and xid (the database's):
# AuditEvent.objects.create() took three times as long in Python for the same statement, and
# every request that reads or changes shared data writes one event.
_FIELDS = [f.attname for f in AuditEvent._meta.concrete_fields]
_WRITTEN_FIELDS = [f for f in AuditEvent._meta.concrete_fields if f.attname not in {"id", "xid"}]
_WRITTEN = [f.attname for f in _WRITTEN_FIELDS]
_COLUMNS = ", ".join(str(f.column) for f in _WRITTEN_FIELDS)
_VALUES = ", ".join("%s::jsonb" if name == "details" else "%s" for name in _WRITTEN)
_TABLE = AuditEvent._meta.db_table
_INSERT = f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES "  # noqa: S608
_RETURNING = f"({_VALUES}) RETURNING id, xid::text"


class Event(TypedDict, total=False):
    """Who did what to what: ``record``'s keyword arguments, each optional (see ``record``)."""

    actor_org: Any
    actor_key: Any
    actor_user: Any
    obj: models.Model | None
    owner_org: Any
    details: dict[str, Any] | None
    request: HttpRequest | Any


def record(action: str, **event: Unpack[Event]) -> AuditEvent:
    """Write one audit event in the caller's transaction, and have it sealed after commit.

    Call it inside the ``atomic()`` block of the change it describes: a rolled-back change
    then leaves no event, and a committed one always has its event. The actor defaults to
    whoever signed ``request`` (member key) or is logged in on it (staff user). ``owner_org``
    defaults to ``obj.audit_owner_org_id`` when the model defines it; the owner can read the
    event (e.g. who pulled my set).
    """
    row = _row(action, event)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT + _RETURNING, _params(row))
        row["id"], xid = cursor.fetchone()
    row["xid"] = int(xid)
    created = AuditEvent.from_db(connection.alias, _FIELDS, [row[n] for n in _FIELDS])
    # One seal request per transaction, however many events it records; a Redis outage only
    # delays sealing until beat's next run.
    enqueue_once_on_commit("audit.seal")
    return created


def record_many(action: str, events: list[Event]) -> None:
    """``record`` for many events of one action, in one statement (a webhook fan-out audits
    hundreds of pushes at once)."""
    if not events:
        return
    rows = [_row(action, event) for event in events]
    values = ", ".join([f"({_VALUES})"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(_INSERT + values, [p for row in rows for p in _params(row)])
    enqueue_once_on_commit("audit.seal")


def _row(action: str, event: Event) -> dict[str, Any]:
    """The event's written columns, by attribute name."""
    request, obj = event.get("request"), event.get("obj")
    actor_org, actor_user = event.get("actor_org"), event.get("actor_user")
    if request is not None and actor_org is None and actor_user is None:
        actor_org, key_id, actor_user = _actor_from(request)
    else:
        key_id = ""
    actor_key = event.get("actor_key")
    if actor_key is not None:
        key_id = getattr(actor_key, "key_id", str(actor_key))
    owner_org = event.get("owner_org")
    owner_org_id = getattr(owner_org, "pk", owner_org)
    if owner_org_id is None and obj is not None:
        owner_org_id = getattr(obj, "audit_owner_org_id", None)
    return {
        "occurred_at": timezone.now(),
        "action": action,
        "actor_org_id": getattr(actor_org, "pk", actor_org),
        "actor_key_id": key_id,
        "actor_user_id": getattr(actor_user, "pk", None),
        "actor_username": getattr(actor_user, "username", "") if actor_user is not None else "",
        "ip": client_ip(request) if request is not None else None,
        # Outside a request (a task), the id of the request that queued the task.
        "request_id": (
            getattr(request, "request_id", "") if request is not None else current_request_id()
        ),
        "object_type": obj._meta.label_lower if obj is not None else "",
        "object_id": str(obj.pk) if obj is not None else "",
        "owner_org_id": owner_org_id,
        "details": _bounded(event.get("details") or {}),
    }


def _params(row: dict[str, Any]) -> list[Any]:
    return [json.dumps(row[n]) if n == "details" else row[n] for n in _WRITTEN]


def event_document(event: AuditEvent) -> dict[str, Any]:
    """The event as the chain hashes it (and as exports and the API show it)."""
    return {
        "id": event.pk,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "action": event.action,
        "actor_org": event.actor_org_id,
        "actor_key_id": event.actor_key_id,
        "actor_user": event.actor_user_id,
        "actor_username": event.actor_username,
        "ip": event.ip,
        "request_id": event.request_id,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "owner_org": event.owner_org_id,
        "details": event.details,
    }
