"""What an organisation may see of the audit log: the one door through which views reach
events and checkpoints (STYLE.md: access_…)."""

from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet

from audit.models import AuditCheckpoint, AuditEvent

if TYPE_CHECKING:  # the audit log sits below members: it names organisations, never imports them
    from members.models import Organisation


def access_events(org: "Organisation") -> QuerySet[AuditEvent]:
    """Events where ``org`` is the actor or owns the object (who pulled my sets, who changed my
    keys), with their seals; unordered, for the caller to page."""
    return AuditEvent.objects.filter(Q(actor_org=org) | Q(owner_org=org)).select_related("seal")


def latest_checkpoint() -> AuditCheckpoint | None:
    """The newest signed checkpoint of the chain, or None before the first is signed. Every
    member may see it: checkpoints carry no organisation's data."""
    return AuditCheckpoint.objects.order_by("-id").first()
