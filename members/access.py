"""What an organisation may see of the members app: the one door through which views reach
organisations and signing keys (STYLE.md: access_…)."""

from collections.abc import Iterable

from django.db.models import QuerySet

from exchange.access import one_by_uuid
from exchange.problems import Problem, echo
from members.models import FeedToken, Organisation, SigningKey


def access_keys(org: Organisation) -> QuerySet[SigningKey]:
    """The organisation's own keys, in every state (model order: oldest first)."""
    return SigningKey.objects.filter(organisation=org)


def access_key(org: Organisation, key_id: str) -> SigningKey:
    """The organisation's key ``key_id``; another organisation's key is a 404 like a missing one."""
    key = access_keys(org).filter(key_id=key_id).first()
    if key is None:
        raise Problem("not-found", f"Your organisation has no key {echo(key_id)}")
    return key


def organisation_by_slug(slug: str) -> Organisation:
    """The organisation ``slug``, of any kind or status (a grant may name one not yet active);
    404 when there is none. Organisations are not secret among members: the slug is what they
    name each other by."""
    org = Organisation.objects.filter(slug=slug).first()
    if org is None:
        raise Problem("not-found", f"No organisation {echo(slug)!r}")
    return org


def organisation_slugs(ids: Iterable[int | None]) -> dict[int, str]:
    """The slug of each organisation among ``ids`` (None, an event without one, is skipped),
    by id; the log keeps ids without a constraint, so one deleted since is simply absent."""
    wanted = {pk for pk in ids if pk is not None}
    return dict(Organisation.objects.filter(pk__in=wanted).values_list("pk", "slug"))


def access_feed_tokens(org: Organisation) -> QuerySet[FeedToken]:
    """The organisation's own feed tokens, revoked and expired ones too (oldest first)."""
    return FeedToken.objects.filter(organisation=org)


def access_feed_token(org: Organisation, token_id: str) -> FeedToken:
    """The organisation's feed token ``token_id``; anyone else's is a 404 like a missing one."""
    return one_by_uuid(
        access_feed_tokens(org), token_id, f"Your organisation has no feed token {echo(token_id)}"
    )
