"""What an organisation may see of the audit log: the one door through which views reach
events and checkpoints (STYLE.md: access_…)."""

from django.db.models import Q, QuerySet

from audit.models import AuditCheckpoint, AuditEvent


def access_events(org_id: int) -> QuerySet[AuditEvent]:
    """Events where the organisation ``org_id`` is the actor or owns the object (who pulled my
    sets, who changed my keys), with their seals; unordered, for the caller to page. (By id: the
    audit log sits below members and names organisations without importing them.)"""
    return AuditEvent.objects.filter(
        Q(actor_org_id=org_id) | Q(owner_org_id=org_id)
    ).select_related("seal")


def latest_checkpoint() -> AuditCheckpoint | None:
    """The newest signed checkpoint of the chain, or None before the first is signed. Every
    member may see it: checkpoints carry no organisation's data."""
    return AuditCheckpoint.objects.order_by("-id").first()
