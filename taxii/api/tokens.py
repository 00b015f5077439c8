"""/api/v1/feed-tokens: a member's read-only tokens for its partner systems (signed requests
only; a token cannot make, see or revoke tokens)."""

from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.bodies import body_of
from exchange.pagination import OldestFirst
from members.access import access_feed_token, access_feed_tokens
from members.actions.tokens import do_create_feed_token, do_revoke_feed_token
from members.models import FeedToken
from members.principal import organisation_of
from signals.access import access_sets, set_slugs
from taxii.api.serializers import (
    CreateFeedTokenSerializer,
    FeedTokenSerializer,
    NewFeedTokenSerializer,
)


def _slugs(tokens: list[FeedToken]) -> dict[int, str]:
    return set_slugs({i for t in tokens for i in t.set_ids})


class FeedTokenListView(ListAPIView):
    serializer_class = FeedTokenSerializer
    pagination_class = OldestFirst

    @extend_schema(operation_id="feed_tokens_list", tags=["feeds"])
    def get(self, request: Request) -> Response:
        """Your organisation's feed tokens (revoked and expired ones too), oldest first; never
        their secrets."""
        return self.list(request)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return access_feed_tokens(organisation_of(self.request))

    def paginate_queryset(self, queryset):  # type: ignore[no-untyped-def]
        page = super().paginate_queryset(queryset)
        self._set_slugs = _slugs(page or [])
        return page

    def get_serializer_context(self):  # type: ignore[no-untyped-def]
        return {**super().get_serializer_context(), "set_slugs": getattr(self, "_set_slugs", {})}

    @extend_schema(
        operation_id="feed_tokens_create",
        tags=["feeds"],
        request=CreateFeedTokenSerializer,
        responses={201: NewFeedTokenSerializer},
    )
    def post(self, request: Request) -> Response:
        """A read-only token for the feed endpoints (TAXII, the MISP feed, the change feed,
        snapshots) of the sets named, sent as ``Authorization: Bearer <token>`` or as the
        password of HTTP Basic. The answer holds the secret (``token``): it is shown once."""
        org = organisation_of(request)
        serializer = CreateFeedTokenSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        sets = access_sets(org, data["sets"])
        token, secret = do_create_feed_token(
            org, data["name"], [s.pk for s in sets], data.get("expires_at"), request=request
        )
        context = {"set_slugs": {s.pk: s.slug for s in sets}}
        return Response(NewFeedTokenSerializer((token, secret), context=context).data, status=201)


class FeedTokenDetailView(APIView):
    @extend_schema(operation_id="feed_tokens_revoke", tags=["feeds"], responses=FeedTokenSerializer)
    def delete(self, request: Request, token_id: str) -> Response:
        """Revoke a token now: its next request is refused (401 ``token-revoked``)."""
        token = do_revoke_feed_token(
            access_feed_token(organisation_of(request), token_id), request=request
        )
        context = {"set_slugs": _slugs([token])}
        return Response(FeedTokenSerializer(token, context=context).data)
