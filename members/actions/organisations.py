"""Membership: creating organisations and moving them between pending, active, suspended."""

from typing import Any

from django.db import IntegrityError, transaction

from audit.actions import record
from exchange import generation
from exchange.problems import Problem
from members.models import Organisation

Status = Organisation.Status

# action -> (allowed from, to, audit action)
TRANSITIONS = {
    "approve": ({Status.PENDING}, Status.ACTIVE, "members.organisation.approved"),
    "suspend": (
        {Status.PENDING, Status.ACTIVE},
        Status.SUSPENDED,
        "members.organisation.suspended",
    ),
    "reactivate": ({Status.SUSPENDED}, Status.ACTIVE, "members.organisation.reactivated"),
}


def do_create_organisation(
    slug: str,
    name: str,
    *,
    kind: str = Organisation.Kind.MEMBER,
    active: bool = False,
    contact_email: str = "",
    contact_name: str = "",
    actor: Any = None,
    request: Any = None,
) -> Organisation:
    """Create an organisation (pending unless ``active``) and record it. Raises a 409 problem
    when the slug is taken (the unique constraint decides, not a prior lookup)."""
    try:
        with transaction.atomic():
            org = Organisation.objects.create(
                slug=slug,
                name=name,
                kind=kind,
                status=Status.ACTIVE if active else Status.PENDING,
                contact_email=contact_email,
                contact_name=contact_name,
            )
            record(
                "members.organisation.created",
                obj=org,
                actor_user=actor,
                request=request,
                details={"slug": slug, "kind": kind, "status": org.status},
            )
    except IntegrityError:
        raise Problem("conflict", f"An organisation with slug {slug!r} exists") from None
    return org


def do_change_status(
    org: Organisation, action: str, reason: str, *, actor: Any = None, request: Any = None
) -> bool:
    """Apply ``approve`` / ``suspend`` / ``reactivate`` if the organisation is in a state that
    allows it; returns whether it changed. Takes effect on the next request, in every process:
    the key cache authentication reads is invalidated (with Redis unreachable the change is
    refused, a 503).

    Locks: a conditional UPDATE on the current status, so two staff acting at once change it
    once and record it once.
    """
    allowed, target, audit_action = TRANSITIONS[action]
    with transaction.atomic():
        changed = Organisation.objects.filter(pk=org.pk, status__in=allowed).update(status=target)
        if changed:
            generation.invalidate_on_commit()
            before = org.status
            org.refresh_from_db(fields=["status", "updated_at"])
            record(
                audit_action,
                obj=org,
                actor_user=actor,
                request=request,
                details={"from": before, "to": target, "reason": reason},
            )
    return bool(changed)
