"""Sets and grants: creating and changing sets, granting and revoking other organisations' rights
(who may see a set is ``signals.access``). Each change renews the access generation: processes
that keep who may read what in memory read it again on their next request."""

from typing import Any

from django.db import IntegrityError, transaction

from audit.actions import record
from exchange import generation
from exchange.problems import Problem
from members.models import Organisation
from signals.access import FEDERABLE_TLP
from signals.models import HashSet, SetGrant


def check_federable(tlp: str, distribution: str) -> None:
    """Only TLP:CLEAR and TLP:GREEN sets may leave the exchange (422 otherwise)."""
    if distribution == HashSet.Distribution.FEDERATED and tlp not in FEDERABLE_TLP:
        raise Problem(
            "not-federable",
            f"A set marked TLP:{tlp.upper()} never leaves the exchange: only TLP:CLEAR and"
            " TLP:GREEN sets may be federated",
        )


def do_create_set(owner: Organisation, fields: dict[str, Any], *, request: Any = None) -> HashSet:
    """Create a set owned by ``owner``; 409 when the slug is taken, 422 when it would be
    federated under a marking that may not leave (``check_federable``)."""
    check_federable(
        fields.get("tlp", HashSet.TLP.AMBER),
        fields.get("distribution", HashSet.Distribution.GRANTED),
    )
    try:
        with transaction.atomic():
            hash_set = HashSet.objects.create(owner=owner, **fields)
            generation.invalidate_on_commit()  # who may read what changed, in every process
            record(
                "signals.set.created",
                obj=hash_set,
                request=request,
                details={"slug": hash_set.slug, **_plain(fields)},
            )
    except IntegrityError:
        raise Problem("conflict", f"A set with slug {fields.get('slug')!r} exists") from None
    return hash_set


def do_update_set(hash_set: HashSet, changes: dict[str, Any], *, request: Any = None) -> HashSet:
    """Change a set; 422 when it would end up federated under a marking that may not leave."""
    check_federable(
        changes.get("tlp", hash_set.tlp), changes.get("distribution", hash_set.distribution)
    )
    with transaction.atomic():
        for name, value in changes.items():
            setattr(hash_set, name, value)
        hash_set.save(update_fields=[*changes, "updated_at"])
        generation.invalidate_on_commit()
        record("signals.set.updated", obj=hash_set, request=request, details=_plain(changes))
    return hash_set


def do_grant(
    hash_set: HashSet, org: Organisation, *, can_read: bool, can_publish: bool, request: Any = None
) -> SetGrant:
    """Create or change ``org``'s grant on the set (the unique constraint decides which)."""
    with transaction.atomic():
        grant, created = SetGrant.objects.update_or_create(
            hash_set=hash_set,
            organisation=org,
            defaults={"can_read": can_read, "can_publish": can_publish},
        )
        generation.invalidate_on_commit()
        record(
            "signals.grant.created" if created else "signals.grant.changed",
            obj=grant,
            request=request,
            details={
                "set": hash_set.slug,
                "organisation": org.slug,
                "can_read": can_read,
                "can_publish": can_publish,
            },
        )
    return grant


def do_revoke_grant(hash_set: HashSet, org: Organisation, *, request: Any = None) -> bool:
    with transaction.atomic():
        deleted, _ = SetGrant.objects.filter(hash_set=hash_set, organisation=org).delete()
        if deleted:
            generation.invalidate_on_commit()
            record(
                "signals.grant.revoked",
                obj=hash_set,
                request=request,
                details={"organisation": org.slug},
            )
    return bool(deleted)


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, (str, int, bool, list, type(None))) else str(v)
        for k, v in fields.items()
    }
