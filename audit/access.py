"""What an organisation may see of the audit log: the one door through which views reach
events and checkpoints (STYLE.md: access_…)."""

from collections.abc import Iterable

from django.db.models import Q, QuerySet

from audit.models import AuditCheckpoint, AuditEvent
from members.models import Organisation


def access_events(org: Organisation) -> QuerySet[AuditEvent]:
    """Events where ``org`` is the actor or owns the object (who pulled my sets, who changed my
    keys), with their seals; unordered, for the caller to page."""
    return AuditEvent.objects.filter(Q(actor_org=org) | Q(owner_org=org)).select_related("seal")


def latest_checkpoint() -> AuditCheckpoint | None:
    """The newest signed checkpoint of the chain, or None before the first is signed. Every
    member may see it: checkpoints carry no organisation's data."""
    return AuditCheckpoint.objects.order_by("-id").first()


def organisation_slugs(ids: Iterable[int | None]) -> dict[int, str]:
    """The slug of each organisation among ``ids`` (None, an event without one, is skipped),
    by id; the log keeps ids without a constraint, so one deleted since is simply absent."""
    wanted = {pk for pk in ids if pk is not None}
    return dict(Organisation.objects.filter(pk__in=wanted).values_list("pk", "slug"))
