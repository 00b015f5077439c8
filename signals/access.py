"""Every visibility and permission query of the signals app: the one door (STYLE.md "Access
through one door") through which views, serializers and actions reach sets, grants, entries,
batches, subscriptions and deliveries.

A row the caller may not see answers 404 exactly like a missing one, so existence does not
leak; a readable set it may not publish to or does not own answers 403.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from django.contrib.postgres.expressions import ArraySubquery
from django.db import connection
from django.db.models import OuterRef, Q, QuerySet, Value
from django.db.models.lookups import Exact

from exchange import generation
from exchange.access import one_by_uuid
from exchange.problems import Problem, echo, invalid
from members.models import Organisation
from signals.models import (
    Batch,
    Delivery,
    HashSet,
    SetEntry,
    SetGrant,
    Subscription,
    entry_lookup,
)
from signals.types import SIGNAL_TYPES, SignalTypeError

Distribution = HashSet.Distribution
# The only markings under which a set's entries may leave the exchange (DESIGN.md "Federation").
FEDERABLE_TLP = [HashSet.TLP.CLEAR, HashSet.TLP.GREEN]

# -- sets and grants ---------------------------------------------------------------------------


def visible_sets(org: Organisation, scope: frozenset[int] | None = None) -> QuerySet[HashSet]:
    """Sets ``org`` may read (see ``readable_by``); only those among ``scope`` (set ids: a feed
    token's sets) when given, so a token never reads past what its organisation may read now. To
    a peer exchange, none whose content passed through it (a mirror of a mirror of its own set:
    its entries would all be refused)."""
    sets = HashSet.objects.filter(readable_by(org.pk, Value(org.kind))).distinct()
    if org.kind == Organisation.Kind.PEER:
        sets = sets.exclude(origin_path__contains=[peer_exchange_of(org)])
    return sets if scope is None else sets.filter(pk__in=scope)


def visible_sets_of(orgs: list[Organisation], among: Q) -> dict[int, dict[int, HashSet]]:
    """``visible_sets`` of each of ``orgs``, among the sets ``among`` selects, by organisation
    and set id: one query for all the members (the same rule, ``readable_by``, applied to each
    organisation's row), one more per peer exchange. What a fan-out to hundreds of subscribers
    asks before it cuts or sends their pages."""
    readable: dict[int, dict[int, HashSet]] = {org.pk: {} for org in orgs}
    members = [org.pk for org in orgs if org.kind != Organisation.Kind.PEER]
    if members:
        sets = HashSet.objects.filter(among).in_bulk()
        rows = (
            Organisation.objects.filter(pk__in=members)
            .annotate(
                readable=ArraySubquery(
                    HashSet.objects.filter(
                        readable_by(OuterRef("pk"), OuterRef("kind")), among
                    ).values("pk")
                )
            )
            .values_list("pk", "readable")
        )
        for org_id, set_ids in rows:
            readable[org_id] = {i: sets[i] for i in set_ids if i in sets}
    for org in orgs:
        if org.kind == Organisation.Kind.PEER:
            readable[org.pk] = {s.pk: s for s in visible_sets(org).filter(among)}
    return readable


# Per organisation, the sets it may read (each with its owner), as rows: see _remembered_sets.
_readable = generation.LocalCache(10_000)
_SET_FIELDS = [f.attname for f in HashSet._meta.concrete_fields]
_ORG_FIELDS = [f.attname for f in Organisation._meta.concrete_fields]
_Rows = list[tuple[tuple[Any, ...], tuple[Any, ...]]]


def _remembered_sets(org: Organisation) -> dict[str, HashSet] | None:
    """Every set ``org`` may read, by slug, kept in this process for the organisation of a
    signed request: that request confirmed ``org`` under the current access generation
    (``exchange.generation``; every change to sets, grants or organisations renews it), so
    what was read under the same generation still holds. None for any other caller (a task, a
    management command), which reads the database."""
    confirmed = org.access_generation
    if confirmed is None:
        return None
    rows: _Rows | None = _readable.get(org.pk, confirmed)
    if rows is None:
        sets = list(visible_sets(org).select_related("owner"))
        rows = [
            (
                tuple(getattr(s, name) for name in _SET_FIELDS),
                tuple(getattr(s.owner, name) for name in _ORG_FIELDS),
            )
            for s in sets
        ]
        _readable.put(org.pk, confirmed, rows)
    readable = {}
    for set_values, owner_values in rows:
        hash_set = HashSet.from_db("default", _SET_FIELDS, set_values)
        hash_set.owner = Organisation.from_db("default", _ORG_FIELDS, owner_values)
        readable[hash_set.slug] = hash_set
    return readable


def readable_by(org_id: Any, org_kind: Any) -> Q:
    """The visibility rule, as a filter on sets: an organisation may read its own sets; granted
    ones (unless the set is owner-only); every coalition-wide set if it is a member; every
    federated set (members and peers). ``org_id`` and ``org_kind`` are values, or references to
    the organisation of an outer query's row (``OuterRef``), so that a query over many
    organisations' rows applies the same rule to each."""
    member = Q(owner=org_id) | Q(distribution=Distribution.FEDERATED)
    member |= Q(
        distribution__in=[Distribution.GRANTED, Distribution.COALITION],
        grants__organisation=org_id,
        grants__can_read=True,
    )
    member |= Q(distribution=Distribution.COALITION)
    # A peer exchange reads federated sets marked CLEAR or GREEN, and nothing else: not what it
    # was granted, not even the mirrors of its own sets (they came from it).
    peer = Q(distribution=Distribution.FEDERATED, tlp__in=FEDERABLE_TLP) & ~Q(owner=org_id)
    return (Q(Exact(org_kind, Organisation.Kind.MEMBER)) & member) | (
        Q(Exact(org_kind, Organisation.Kind.PEER)) & peer
    )


def may_publish(org: Organisation, hash_set: HashSet) -> bool:
    if hash_set.is_mirror:
        return False
    if hash_set.owner_id == org.pk:
        return True
    if hash_set.distribution == Distribution.OWNER:
        return False
    return SetGrant.objects.filter(hash_set=hash_set, organisation=org, can_publish=True).exists()


_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")
# Sets one request may name (a subscription, a pull of the feed, the matches of one request).
MAX_SETS = 100


def plausible_slug(text: str) -> bool:
    """Whether ``text`` can be a set's slug; one that cannot (a NUL byte, say) names nothing,
    and need never reach the database."""
    return _SLUG.fullmatch(text) is not None


def _visible_by_slug(
    org: Organisation, slugs: list[str], scope: frozenset[int] | None = None
) -> dict[str, HashSet]:
    """The sets among ``slugs`` that ``org`` may read (one that cannot be a slug: not found);
    400 for more than ``MAX_SETS`` slugs in one request."""
    _check_count(slugs)
    plausible = [slug for slug in slugs if plausible_slug(slug)]
    if not plausible:
        return {}
    remembered = _remembered_sets(org)
    if remembered is not None:
        found = (remembered[slug] for slug in plausible if slug in remembered)
        return {s.slug: s for s in found if scope is None or s.pk in scope}
    sets = visible_sets(org, scope).filter(slug__in=plausible).select_related("owner")
    return {s.slug: s for s in sets}


def access_set(
    org: Organisation, slug: str, *, need: str = "read", scope: frozenset[int] | None = None
) -> HashSet:
    """The set ``slug`` if ``org`` may ``need`` (read, publish or own) it.

    A set the organisation may not read answers 404 exactly like a missing one, so existence
    does not leak; a readable set it may not publish to or does not own answers 403.
    """
    hash_set = _visible_by_slug(org, [slug], scope).get(slug)
    if hash_set is None:
        raise Problem("not-found", f"No set {echo(slug)!r} is visible to your organisation")
    if need != "read" and hash_set.is_mirror:
        raise Problem(
            "forbidden",
            f"{slug!r} mirrors {hash_set.origin_set!r} of the exchange {hash_set.origin_exchange}:"
            " it is read-only here; only its origin adds or retracts",
        )
    if need == "publish" and not may_publish(org, hash_set):
        raise Problem("forbidden", f"Your organisation may read {slug!r} but not publish to it")
    if need == "own" and hash_set.owner_id != org.pk:
        raise Problem("forbidden", f"Only the owner of {slug!r} may do this")
    return hash_set


def peer_exchange_of(org: Organisation) -> str:
    """What the feed served to ``org`` is filtered by (``signals.feed.reads``): a peer
    exchange's id (nothing that passed through it, nothing without hops left), or "" for a
    member, which reads entries as they are. A peer whose exchange id is unknown still gets
    the hops filter (its slug is in no path)."""
    if org.kind != Organisation.Kind.PEER:
        return ""
    return org.exchange_id or f"org:{org.slug}"


def access_sets(
    org: Organisation, slugs: list[str], scope: frozenset[int] | None = None
) -> list[HashSet]:
    """``access_set`` for several slugs in one query: 404 naming the first that ``org`` may
    not read (or that does not exist)."""
    found = _visible_by_slug(org, slugs, scope)
    _check_found(found, slugs)
    return [found[slug] for slug in dict.fromkeys(slugs)]


def access_feed_sets(
    org: Organisation, slugs: list[str], scope: frozenset[int] | None = None
) -> dict[int, HashSet]:
    """The sets a pull of the feed reads, by id: ``slugs`` (404 as ``access_sets``), or every
    set ``org`` may read when it names none; within ``scope`` when given (a feed token)."""
    hash_sets = access_sets(org, slugs, scope) if slugs else _all_readable(org, scope)
    return {s.pk: s for s in hash_sets}


def access_readable_sets(org: Organisation, slugs: list[str]) -> dict[int, HashSet]:
    """Every set ``org`` may read, by id, in one query, for callers that need them all and
    some by name: 404 as ``access_sets`` when one of ``slugs`` is not among them (400 past
    ``MAX_SETS``)."""
    _check_count(slugs)
    readable = {s.pk: s for s in _all_readable(org)}
    _check_found({s.slug: s for s in readable.values()}, slugs)
    return readable


def _all_readable(org: Organisation, scope: frozenset[int] | None = None) -> list[HashSet]:
    remembered = _remembered_sets(org)
    if remembered is None:
        return list(visible_sets(org, scope))
    return [s for s in remembered.values() if scope is None or s.pk in scope]


def _check_count(slugs: list[str]) -> None:
    if len(slugs) > MAX_SETS:
        message = f"at most {MAX_SETS} sets in one request; {len(slugs)} were named"
        raise invalid("sets", message)


def _check_found(found: dict[str, HashSet], slugs: list[str]) -> None:
    missing = next((slug for slug in slugs if slug not in found), None)
    if missing is not None:
        raise Problem("not-found", f"No set {echo(missing)!r} is visible to your organisation")


def grants_of(hash_set: HashSet) -> QuerySet[SetGrant]:
    """The grants on a set, with their organisations (for its owner's eyes)."""
    return SetGrant.objects.filter(hash_set=hash_set).select_related("organisation")


def set_slugs(set_ids: set[int]) -> dict[int, str]:
    """The slugs of the sets ``set_ids``, by id (the caller already holds the ids)."""
    return dict(HashSet.objects.filter(pk__in=set_ids).values_list("pk", "slug"))


# -- entries -----------------------------------------------------------------------------------

_SQL_RESOLVE = f"""
SELECT e.type, e.value, e.id
FROM unnest(%s::text[], %s::text[]) AS q(type, value)
JOIN signals_setentry e ON {entry_lookup("e", "q.type", "q.value", "= %s")}
"""  # noqa: S608 - only constants are interpolated


@dataclass
class Resolved:
    """Items resolved to entry ids of one set, with a reason for each one that was not."""

    entries: dict[int, int] = field(default_factory=dict)  # item index -> entry id
    rejections: list[dict[str, Any]] = field(default_factory=list)


def resolve_entries(hash_set: HashSet, items: list[Any]) -> Resolved:
    """Items are ``{"entry": id}`` or ``{"type": …, "value": …}``: one query for all of them."""
    resolved = Resolved()
    by_value: dict[tuple[str, str], list[int]] = {}
    by_id: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            resolved.rejections.append({"index": index, "reason": "expected an object"})
        elif isinstance(item.get("entry"), int) and not isinstance(item.get("entry"), bool):
            if not 0 < item["entry"] < 2**63:
                resolved.rejections.append({"index": index, "reason": "not in this set"})
                continue
            by_id.setdefault(item["entry"], []).append(index)
        elif isinstance(item.get("type"), str) and isinstance(item.get("value"), str):
            signal_type = SIGNAL_TYPES.get(item["type"])
            try:
                if signal_type is None:
                    raise SignalTypeError(f"unknown signal type {item['type']!r:.40}")
                # A lookup, not a publish: a value warninglisted since is still found.
                key = (item["type"], signal_type.canonical(item["value"]))
            except SignalTypeError as exc:
                resolved.rejections.append({"index": index, "reason": str(exc)})
                continue
            by_value.setdefault(key, []).append(index)
        else:
            resolved.rejections.append({"index": index, "reason": "give entry, or type and value"})
    found: dict[Any, int] = {}
    if by_id:
        for entry_id in SetEntry.objects.filter(hash_set=hash_set, pk__in=by_id).values_list(
            "pk", flat=True
        ):
            found[entry_id] = entry_id
    if by_value:
        with connection.cursor() as cursor:
            cursor.execute(
                _SQL_RESOLVE, [[k[0] for k in by_value], [k[1] for k in by_value], hash_set.pk]
            )
            for kind, value, entry_id in cursor.fetchall():
                found[(kind, value)] = entry_id
    pending: list[tuple[Any, list[int]]] = [*by_id.items(), *by_value.items()]
    for key, indexes in pending:
        for index in indexes:
            if key in found:
                resolved.entries[index] = found[key]
            else:
                resolved.rejections.append({"index": index, "reason": "not in this set"})
    resolved.rejections.sort(key=lambda r: r["index"])
    return resolved


# -- batches -----------------------------------------------------------------------------------


def access_batches(org: Organisation, *, set_slug: str = "", state: str = "") -> QuerySet[Batch]:
    """``org``'s batches, with their sets: the only ones it may see; only those into the set
    ``set_slug`` and in ``state`` when given (400 naming the states for an unknown one)."""
    batches = Batch.objects.filter(organisation=org).select_related("hash_set")
    if set_slug:
        batches = (
            batches.filter(hash_set__slug=set_slug) if plausible_slug(set_slug) else batches.none()
        )
    if state:
        if state not in Batch.State.values:
            choices = ", ".join(Batch.State.values)
            raise invalid("state", f"one of {choices}")
        batches = batches.filter(state=state)
    return batches


def access_batch(org: Organisation, batch_id: str) -> Batch:
    """``org``'s batch ``batch_id``; 404 for anyone else's, so ids do not leak."""
    return one_by_uuid(access_batches(org), batch_id, f"No batch {batch_id} of your organisation")


# -- subscriptions and deliveries ---------------------------------------------------------------


def access_subscriptions(org: Organisation) -> QuerySet[Subscription]:
    """``org``'s subscriptions, oldest first: the only ones it may see."""
    return Subscription.objects.filter(organisation=org)


def access_subscription(org: Organisation, subscription_id: str) -> Subscription:
    """``org``'s subscription ``subscription_id``; 404 for anyone else's, so ids do not leak."""
    missing = f"No subscription {subscription_id!r} of your organisation"
    return one_by_uuid(access_subscriptions(org), subscription_id, missing)


def access_deliveries(subscription: Subscription) -> QuerySet[Delivery]:
    """The deliveries of a subscription the caller may see (``access_subscription``), without
    their bodies (whole pages), for a list."""
    return subscription.deliveries.defer("body")


def access_delivery(subscription: Subscription, delivery_id: str) -> Delivery:
    """A delivery of ``subscription`` by its id or ``webhook-id`` (``msg_…``); 404 otherwise."""
    missing = f"No delivery {delivery_id!r} of this subscription"
    return one_by_uuid(subscription.deliveries.all(), delivery_id.removeprefix("msg_"), missing)
