"""Sets and grants, and the one door through which views reach a set (STYLE.md: access_…)."""

import re
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet, Value
from django.db.models.lookups import Exact

from audit.actions import record
from exchange.problems import Problem
from members.models import Organisation
from signals.models import HashSet, SetGrant

Distribution = HashSet.Distribution


def visible_sets(org: Organisation) -> QuerySet[HashSet]:
    """Sets ``org`` may read (see ``readable_by``)."""
    return HashSet.objects.filter(readable_by(org.pk, Value(org.kind))).distinct()


def readable_by(org_id: Any, org_kind: Any) -> Q:
    """The visibility rule, as a filter on sets: an organisation may read its own sets; granted
    ones (unless the set is owner-only); every coalition-wide set if it is a member; every
    federated set (members and peers). ``org_id`` and ``org_kind`` are values, or references to
    the organisation of an outer query's row (``OuterRef``), so that a query over many
    organisations' rows applies the same rule to each."""
    readable = Q(owner=org_id) | Q(distribution=Distribution.FEDERATED)
    readable |= Q(
        distribution__in=[Distribution.GRANTED, Distribution.COALITION],
        grants__organisation=org_id,
        grants__can_read=True,
    )
    readable |= Q(Exact(org_kind, Organisation.Kind.MEMBER), distribution=Distribution.COALITION)
    return readable


def may_publish(org: Organisation, hash_set: HashSet) -> bool:
    if hash_set.owner_id == org.pk:
        return True
    if hash_set.distribution == Distribution.OWNER:
        return False
    return SetGrant.objects.filter(hash_set=hash_set, organisation=org, can_publish=True).exists()


_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")


def plausible_slug(text: str) -> bool:
    """Whether ``text`` can be a set's slug; one that cannot (a NUL byte, say) names nothing,
    and need never reach the database."""
    return _SLUG.fullmatch(text) is not None


def _visible_by_slug(org: Organisation, slugs: list[str]) -> dict[str, HashSet]:
    """The sets among ``slugs`` that ``org`` may read (one that cannot be a slug: not found)."""
    plausible = [slug for slug in slugs if plausible_slug(slug)]
    if not plausible:
        return {}
    sets = visible_sets(org).filter(slug__in=plausible).select_related("owner")
    return {s.slug: s for s in sets}


def access_set(org: Organisation, slug: str, *, need: str = "read") -> HashSet:
    """The set ``slug`` if ``org`` may ``need`` (read, publish or own) it.

    A set the organisation may not read answers 404 exactly like a missing one, so existence
    does not leak; a readable set it may not publish to or does not own answers 403.
    """
    hash_set = _visible_by_slug(org, [slug]).get(slug)
    if hash_set is None:
        raise Problem("not-found", f"No set {slug!r} is visible to your organisation")
    if need == "publish" and not may_publish(org, hash_set):
        raise Problem("forbidden", f"Your organisation may read {slug!r} but not publish to it")
    if need == "own" and hash_set.owner_id != org.pk:
        raise Problem("forbidden", f"Only the owner of {slug!r} may do this")
    return hash_set


def access_sets(org: Organisation, slugs: list[str]) -> list[HashSet]:
    """``access_set`` for several slugs in one query: 404 naming the first that ``org`` may
    not read (or that does not exist)."""
    found = _visible_by_slug(org, slugs)
    _check_found(found, slugs)
    return [found[slug] for slug in dict.fromkeys(slugs)]


def access_readable_sets(org: Organisation, slugs: list[str]) -> dict[int, HashSet]:
    """Every set ``org`` may read, by id, in one query, for callers that need them all and
    some by name: 404 as ``access_sets`` when one of ``slugs`` is not among them."""
    readable = {s.pk: s for s in visible_sets(org)}
    _check_found({s.slug: s for s in readable.values()}, slugs)
    return readable


def _check_found(found: dict[str, HashSet], slugs: list[str]) -> None:
    missing = next((slug for slug in slugs if slug not in found), None)
    if missing is not None:
        raise Problem("not-found", f"No set {missing!r} is visible to your organisation")


def do_create_set(owner: Organisation, fields: dict[str, Any], *, request: Any = None) -> HashSet:
    """Create a set owned by ``owner``; 409 when the slug is taken."""
    try:
        with transaction.atomic():
            hash_set = HashSet.objects.create(owner=owner, **fields)
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
    with transaction.atomic():
        for name, value in changes.items():
            setattr(hash_set, name, value)
        hash_set.save(update_fields=[*changes, "updated_at"])
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
