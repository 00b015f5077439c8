import json
from collections.abc import Iterator
from datetime import datetime

from audit.actions.record import event_document
from audit.models import AuditEvent


def iter_ndjson(since: datetime | None, until: datetime | None, chunk: int = 2000) -> Iterator[str]:
    """Events in [since, until) in id order, one JSON document per line with its seq and hash
    (null while unsealed). Streams: constant memory however long the range."""
    events = AuditEvent.objects.select_related("seal").order_by("id")
    if since is not None:
        events = events.filter(occurred_at__gte=since)
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    for event in events.iterator(chunk_size=chunk):
        seal = getattr(event, "seal", None)
        doc = {
            **event_document(event),
            "seq": seal.seq if seal else None,
            "hash": seal.hash if seal else None,
        }
        yield json.dumps(doc, ensure_ascii=False) + "\n"
