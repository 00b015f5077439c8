"""What a TAXII or MISP-feed caller may read: the one door to collections (STYLE.md "Access
through one door"). A collection is a set the caller may read, named by a stable id; a feed
token reads only its own sets among those. These feeds are for members and the partner systems
they hand a token to: a peer exchange reads the change feed, where the federation rules (hops,
path) decide what may leave, so it is served no collection here."""

from exchange.actions.identity import get_identity
from exchange.problems import Problem, echo
from members.models import Organisation
from signals.access import access_set, visible_sets
from signals.models import HashSet
from taxii.stix import collection_id


def exchange_id() -> str:
    return get_identity().exchange_id


def access_collections(org: Organisation, scope: frozenset[int] | None) -> dict[str, HashSet]:
    """The sets ``org`` may read now (within ``scope``, a feed token's), by collection id, in
    slug order."""
    if org.kind == Organisation.Kind.PEER:
        return {}
    exchange = exchange_id()
    return {collection_id(exchange, s.slug): s for s in visible_sets(org, scope).order_by("slug")}


def access_collection(org: Organisation, scope: frozenset[int] | None, collection: str) -> HashSet:
    """The set behind ``collection``; 404 exactly like a missing one for a set the caller may
    not read, so existence does not leak."""
    hash_set = access_collections(org, scope).get(collection)
    if hash_set is None:
        raise Problem("not-found", f"No collection {echo(collection)} is visible to you")
    return hash_set


def access_feed_set(org: Organisation, scope: frozenset[int] | None, slug: str) -> HashSet:
    """The set ``slug`` for the MISP feed: 404 unless the caller may read it (never to a peer
    exchange)."""
    if org.kind == Organisation.Kind.PEER:
        raise Problem("not-found", f"No set {echo(slug)!r} is visible to your organisation")
    return access_set(org, slug, scope=scope)
