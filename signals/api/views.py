import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiRequest, extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.bodies import body_of, require_body
from exchange.pagination import BySlug, NewestFirst, OldestFirst, parse_limit
from exchange.problems import Problem
from members.access import organisation_by_slug
from members.models import Organisation
from members.principal import MemberPrincipal, organisation_of, scope_of
from members.tokens import FEED_AUTHENTICATION
from signals.access import (
    access_batch,
    access_batches,
    access_deliveries,
    access_delivery,
    access_feed_sets,
    access_set,
    access_sets,
    access_subscription,
    access_subscriptions,
    grants_of,
    peer_exchange_of,
    set_slugs,
    visible_sets,
)
from signals.actions.match import check_queries, do_match
from signals.actions.opinions import do_give_opinions
from signals.actions.publish import do_publish
from signals.actions.pulls import do_pull_page, pull_snapshot, pull_stream
from signals.actions.quotas import charge_signals, check_match_quota, check_signal_quota
from signals.actions.retractions import do_retract
from signals.actions.sets import do_create_set, do_grant, do_revoke_grant, do_update_set
from signals.actions.subscriptions import (
    check_subscription_url,
    do_create_subscription,
    do_delete_subscription,
    do_redeliver,
    do_update_subscription,
)
from signals.api.serializers import (
    BatchSerializer,
    ChangeSerializer,
    ChangesPageSerializer,
    DeliverySerializer,
    GrantListSerializer,
    GrantSerializer,
    ItemsSerializer,
    MatchAnswerSerializer,
    MatchRequestSerializer,
    OpinionAnswerSerializer,
    PublishSerializer,
    RedeliverSerializer,
    RetractAnswerSerializer,
    SetSerializer,
    SetUpdateSerializer,
    SubscriptionSerializer,
    SubscriptionUpdateSerializer,
)
from signals.api.uploads import (
    DigestReader,
    csv_items,
    fingerprint,
    idempotency_key_of,
    json_items,
    ndjson_items,
    text_items,
)
from signals.feed.positions import START
from signals.feed.reads import held_cursor
from signals.models import Batch, Subscription

STREAM_SOURCES = {
    "application/x-ndjson": ndjson_items,
    "text/csv": csv_items,
    "text/plain": text_items,
}


class SetListView(ListAPIView):
    serializer_class = SetSerializer
    pagination_class = BySlug

    @extend_schema(operation_id="sets_list", tags=["sets"])
    def get(self, request: Request) -> Response:
        """The sets your organisation may read, by slug; paged by opaque cursor."""
        return self.list(request)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return visible_sets(organisation_of(self.request)).select_related("owner")

    @extend_schema(
        operation_id="sets_create",
        tags=["sets"],
        request=SetSerializer,
        responses={201: SetSerializer},
    )
    def post(self, request: Request) -> Response:
        """Create a set; your organisation owns it."""
        serializer = SetSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        hash_set = do_create_set(
            organisation_of(request), serializer.validated_data, request=request
        )
        return Response(SetSerializer(hash_set).data, status=201)


# Grants shown in a set's own answer; the rest are paged at its ``grants_url``.
GRANTS_SHOWN = 100


class SetDetailView(APIView):
    @extend_schema(operation_id="sets_get", tags=["sets"], responses=SetSerializer)
    def get(self, request: Request, slug: str) -> Response:
        hash_set = access_set(organisation_of(request), slug)
        data = SetSerializer(hash_set).data
        if hash_set.owner_id == organisation_of(request).pk:
            # The first grants only, oldest first: the whole list is paged at ``grants_url``.
            grants = list(grants_of(hash_set).order_by("created_at", "pk")[: GRANTS_SHOWN + 1])
            data["grants"] = GrantListSerializer(grants[:GRANTS_SHOWN], many=True).data
            data["grants_complete"] = len(grants) <= GRANTS_SHOWN
            data["grants_url"] = f"/api/v1/sets/{hash_set.slug}/grants"
        return Response(data)

    @extend_schema(
        operation_id="sets_update",
        tags=["sets"],
        request=SetUpdateSerializer,
        responses=SetSerializer,
    )
    def patch(self, request: Request, slug: str) -> Response:
        """Change a set you own."""
        hash_set = access_set(organisation_of(request), slug, need="own")
        serializer = SetUpdateSerializer(data=body_of(request), partial=True)
        serializer.is_valid(raise_exception=True)
        hash_set = do_update_set(hash_set, dict(serializer.validated_data), request=request)
        return Response(SetSerializer(hash_set).data)


class GrantListView(ListAPIView):
    serializer_class = GrantListSerializer
    pagination_class = OldestFirst

    @extend_schema(
        operation_id="grants_list",
        tags=["sets"],
        parameters=[OpenApiParameter("limit", OpenApiTypes.INT, description="up to 500")],
    )
    def get(self, request: Request, slug: str) -> Response:
        """The grants on a set you own, oldest first; paged by opaque cursor."""
        return self.list(request)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        hash_set = access_set(organisation_of(self.request), self.kwargs["slug"], need="own")
        return grants_of(hash_set)


class GrantView(APIView):
    def _target(self, request: Request, slug: str, org_slug: str) -> tuple[Any, Organisation]:
        hash_set = access_set(organisation_of(request), slug, need="own")
        org = organisation_by_slug(org_slug)
        if org.pk == hash_set.owner_id:
            raise Problem("validation", "The owner needs no grant on its own set")
        return hash_set, org

    @extend_schema(
        operation_id="grants_put", tags=["sets"], request=GrantSerializer, responses=GrantSerializer
    )
    def put(self, request: Request, slug: str, org_slug: str) -> Response:
        """Let another organisation read (and perhaps publish to) your set."""
        hash_set, org = self._target(request, slug, org_slug)
        serializer = GrantSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        grant = do_grant(hash_set, org, request=request, **serializer.validated_data)
        return Response(GrantSerializer(grant).data)

    @extend_schema(operation_id="grants_delete", tags=["sets"], responses={204: None})
    def delete(self, request: Request, slug: str, org_slug: str) -> Response:
        hash_set, org = self._target(request, slug, org_slug)
        if not do_revoke_grant(hash_set, org, request=request):
            raise Problem("not-found", f"{org_slug} has no grant on {slug}")
        return Response(status=204)


class PublishView(APIView):
    @extend_schema(
        operation_id="signals_publish",
        tags=["publish"],
        request={
            "application/json": PublishSerializer,
            "application/x-ndjson": OpenApiRequest(OpenApiTypes.STR),
            "text/csv": OpenApiRequest(OpenApiTypes.STR),
            "text/plain": OpenApiRequest(OpenApiTypes.STR),
        },
        parameters=[
            OpenApiParameter(
                "atomic",
                OpenApiTypes.BOOL,
                description="streams: refuse all if one line is rejected",
            ),
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="up to 200 printable ASCII characters: a retry of the same request"
                " (set, content type, atomic, body) with the same key gets the first answer and"
                " changes nothing; the key with another request is 422, and 409 while the first"
                " request with it is still in flight",
            ),
        ],
        responses={202: BatchSerializer},
    )
    def post(self, request: Request, slug: str) -> Response:
        """Publish signals into a set: JSON (up to 10,000), or a streamed NDJSON, CSV or
        ``<type> <value>`` upload of any size. Every rejected item is answered with its index or
        line and reason; the valid ones are staged and merged by a worker (see the batch)."""
        org = organisation_of(request)
        hash_set = access_set(org, slug, need="publish")
        principal = request.user
        assert isinstance(principal, MemberPrincipal)
        require_body(request)
        idempotency_key = idempotency_key_of(request)
        parse = STREAM_SOURCES.get(request._request.content_type or "")
        if parse is not None:
            reader = DigestReader(request._request, principal.streamed_digest)
            source, before_commit = parse(reader), reader.verify
            atomic = request.query_params.get("atomic", "").lower() in {"1", "true", "yes"}
            check_signal_quota(org, None, request=request)
        else:
            serializer = PublishSerializer(data=body_of(request))
            serializer.is_valid(raise_exception=True)
            source, before_commit = json_items(serializer.validated_data["signals"]), None
            atomic = serializer.validated_data["atomic"]
            check_signal_quota(org, len(serializer.validated_data["signals"]), request=request)
        batch, replayed = do_publish(
            hash_set,
            org,
            source,
            key_id=principal.key.key_id if principal.key else "",
            atomic=atomic,
            idempotency_key=idempotency_key,
            fingerprint=(
                fingerprint(request._request, hash_set.slug, atomic, principal)
                if idempotency_key
                else ""
            ),
            request=request,
            before_commit=before_commit,
        )
        if parse is not None and not replayed:
            charge_signals(org, batch.accepted)
        headers = {"Location": f"/api/v1/batches/{batch.pk}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(batch.answer, status=202, headers=headers)


class BatchListView(ListAPIView):
    serializer_class = BatchSerializer
    pagination_class = NewestFirst

    @extend_schema(
        operation_id="batches_list",
        tags=["publish"],
        parameters=[
            OpenApiParameter("set", OpenApiTypes.STR, description="only batches into this set"),
            OpenApiParameter(
                "state", OpenApiTypes.STR, enum=Batch.State.values, description="only these"
            ),
            OpenApiParameter("limit", OpenApiTypes.INT, description="up to 500"),
        ],
    )
    def get(self, request: Request) -> Response:
        """Your organisation's batches, newest first, with the same state, progress and counts
        as one batch's report; paged by opaque cursor."""
        return self.list(request)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        params = self.request.query_params
        return access_batches(
            organisation_of(self.request),
            set_slug=params.get("set", ""),
            state=params.get("state", ""),
        )


class BatchView(APIView):
    @extend_schema(operation_id="batches_get", tags=["publish"], responses=BatchSerializer)
    def get(self, request: Request, batch_id: str) -> Response:
        """State, progress and counts of a batch your organisation published."""
        return Response(BatchSerializer(access_batch(organisation_of(request), batch_id)).data)


class RetractView(APIView):
    @extend_schema(
        operation_id="signals_retract",
        tags=["publish"],
        request=ItemsSerializer,
        responses=RetractAnswerSerializer,
    )
    def post(self, request: Request, slug: str) -> Response:
        """Retract your contributions (the set owner: remove entries). An entry with no
        contribution left becomes a tombstone in the change feed."""
        org = organisation_of(request)
        hash_set = access_set(org, slug, need="publish")
        serializer = ItemsSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        return Response(
            do_retract(hash_set, org, serializer.validated_data["signals"], request=request)
        )


class OpinionView(APIView):
    @extend_schema(
        operation_id="signals_opinions",
        tags=["publish"],
        request=ItemsSerializer,
        responses=OpinionAnswerSerializer,
    )
    def post(self, request: Request, slug: str) -> Response:
        """Give opinions (positive, negative, investigation_seed, with tags) on entries of a
        set you can read; one per organisation per entry, the latest counts."""
        org = organisation_of(request)
        hash_set = access_set(org, slug)
        serializer = ItemsSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        # do_give_opinions is one transaction of its own.
        answer = do_give_opinions(
            hash_set, org, serializer.validated_data["signals"], request=request
        )
        return Response(answer)


class NDJSONRenderer(BaseRenderer):
    """Lets clients ask for ``application/x-ndjson``; the view streams that body itself."""

    media_type = "application/x-ndjson"
    format = "ndjson"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return (json.dumps(data, cls=DjangoJSONEncoder) + "\n").encode()


class ChangesView(APIView):
    MAX_LIMIT = 10_000
    authentication_classes = FEED_AUTHENTICATION
    renderer_classes = [JSONRenderer, NDJSONRenderer]

    @extend_schema(
        operation_id="changes",
        tags=["feed"],
        parameters=[
            OpenApiParameter(
                "sets",
                OpenApiTypes.STR,
                description="comma-separated set slugs (default: all you read)",
            ),
            OpenApiParameter(
                "cursor", OpenApiTypes.STR, description="from the previous page; omit to start"
            ),
            OpenApiParameter(
                "limit",
                OpenApiTypes.INT,
                description="changes per page, 1 to 10,000 (default 1,000)",
            ),
        ],
        responses=ChangesPageSerializer,
    )
    def get(self, request: Request) -> Response:
        """The latest state of every entry changed after the cursor, in change order, with
        tombstones for retracted and expired entries. Positions only ever grow: a change
        committed later never appears before a cursor you already hold."""
        params = request.query_params
        slugs = [s for s in params.get("sets", "").split(",") if s]
        org = organisation_of(request)
        sets = access_feed_sets(org, slugs, scope_of(request))
        limit = parse_limit(params.get("limit"), self.MAX_LIMIT, 1000)
        after = held_cursor(params["cursor"]) if params.get("cursor") else START
        peer = peer_exchange_of(org)
        if request.accepted_renderer.format == "ndjson":
            stream = pull_stream(sets, after, request=request, peer=peer)
            return StreamingHttpResponse(stream, content_type="application/x-ndjson")  # type: ignore[return-value]
        page = do_pull_page(
            sets,
            after,
            limit,
            if_none_match=request.headers.get("If-None-Match"),
            request=request,
            peer=peer,
        )
        if page.body is None:
            return Response(status=304, headers={"ETag": page.etag})
        return HttpResponse(page.body, content_type="application/json", headers={"ETag": page.etag})  # type: ignore[return-value]


class SnapshotView(APIView):
    renderer_classes = [NDJSONRenderer, JSONRenderer]
    authentication_classes = FEED_AUTHENTICATION

    @extend_schema(
        operation_id="sets_snapshot",
        tags=["feed"],
        responses={(200, "application/x-ndjson"): ChangeSerializer},
    )
    def get(self, request: Request, slug: str) -> StreamingHttpResponse:
        """Every active entry of a set, one JSON object per line, from one consistent database
        snapshot; the last line is ``{"cursor": …, "end": true}``: pull /api/v1/changes from
        there. Start here when your cursor is too old (410) or you have nothing yet."""
        org = organisation_of(request)
        hash_set = access_set(org, slug, scope=scope_of(request))
        return StreamingHttpResponse(
            pull_snapshot(hash_set, request=request, peer=peer_exchange_of(org)),
            content_type="application/x-ndjson",
        )


def _set_slugs(subscriptions: list[Subscription]) -> dict[int, str]:
    return set_slugs({i for s in subscriptions for i in s.set_ids})


def _subscription_answer(subscription: Subscription, status: int = 200) -> Response:
    context = {"set_slugs": _set_slugs([subscription])}
    return Response(SubscriptionSerializer(subscription, context=context).data, status=status)


class SubscriptionListView(ListAPIView):
    serializer_class = SubscriptionSerializer
    pagination_class = OldestFirst
    _set_slugs: dict[int, str]

    @extend_schema(operation_id="subscriptions_list", tags=["subscriptions"])
    def get(self, request: Request) -> Response:
        """Your organisation's webhook subscriptions, oldest first; paged by opaque cursor."""
        return self.list(request)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return access_subscriptions(organisation_of(self.request))

    def paginate_queryset(self, queryset):  # type: ignore[no-untyped-def]
        page = super().paginate_queryset(queryset)
        self._set_slugs = _set_slugs(page or [])
        return page

    def get_serializer_context(self):  # type: ignore[no-untyped-def]
        # No page (an OPTIONS request describing the POST body): no sets to name.
        return {**super().get_serializer_context(), "set_slugs": getattr(self, "_set_slugs", {})}

    @extend_schema(
        operation_id="subscriptions_create",
        tags=["subscriptions"],
        request=SubscriptionSerializer,
        responses={201: SubscriptionSerializer},
    )
    def post(self, request: Request) -> Response:
        """Subscribe an endpoint to sets you read: the exchange POSTs each next page of the
        change feed after the subscription's cursor (default: from now), signed with Standard
        Webhooks headers by its key at /.well-known/hashx, one page in flight at a time, and
        moves the cursor on a 2xx. The URL must be https and resolve to public addresses."""
        org = organisation_of(request)
        serializer = SubscriptionSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        check_subscription_url(data["url"])
        subscription = do_create_subscription(
            org,
            url=data["url"],
            sets=access_sets(org, data["sets"]),
            signal_types=data["signal_types"],
            labels=data["labels"],
            description=data["description"],
            cursor=data.get("cursor"),
            active=data["active"],
            request=request,
        )
        return _subscription_answer(subscription, status=201)


class SubscriptionDetailView(APIView):
    @extend_schema(
        operation_id="subscriptions_get", tags=["subscriptions"], responses=SubscriptionSerializer
    )
    def get(self, request: Request, subscription_id: str) -> Response:
        """A subscription: its cursor, state, and why it failed or was disabled."""
        return _subscription_answer(access_subscription(organisation_of(request), subscription_id))

    @extend_schema(
        operation_id="subscriptions_update",
        tags=["subscriptions"],
        request=SubscriptionUpdateSerializer,
        responses=SubscriptionSerializer,
    )
    def patch(self, request: Request, subscription_id: str) -> Response:
        """Change the URL, sets, filters or description; ``active: false`` pauses and
        ``active: true`` resumes (a disabled subscription too). New sets or filters take effect
        from the next page."""
        org = organisation_of(request)
        subscription = access_subscription(org, subscription_id)
        serializer = SubscriptionUpdateSerializer(data=body_of(request), partial=True)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        if "url" in changes:
            check_subscription_url(changes["url"])
        if "sets" in changes:
            changes["sets"] = access_sets(org, changes["sets"])
        return _subscription_answer(do_update_subscription(subscription, changes, request=request))

    @extend_schema(
        operation_id="subscriptions_delete", tags=["subscriptions"], responses={204: None}
    )
    def delete(self, request: Request, subscription_id: str) -> Response:
        """Delete a subscription and its delivery history."""
        subscription = access_subscription(organisation_of(request), subscription_id)
        do_delete_subscription(subscription, request=request)
        return Response(status=204)


class DeliveryListView(ListAPIView):
    serializer_class = DeliverySerializer
    pagination_class = NewestFirst

    @extend_schema(
        operation_id="subscriptions_deliveries",
        tags=["subscriptions"],
        parameters=[OpenApiParameter("limit", OpenApiTypes.INT, description="up to 500")],
    )
    def get(self, request: Request, subscription_id: str) -> Response:
        """The subscription's deliveries, newest first, with attempts, the last status or
        error and an excerpt of the last answer; paged by opaque cursor."""
        return self.list(request)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        subscription = access_subscription(
            organisation_of(self.request), self.kwargs["subscription_id"]
        )
        return access_deliveries(subscription)


class RedeliverView(APIView):
    @extend_schema(
        operation_id="subscriptions_redeliver",
        tags=["subscriptions"],
        request=RedeliverSerializer,
        responses=SubscriptionSerializer,
    )
    def post(self, request: Request, subscription_id: str) -> Response:
        """Send again. ``{}``: try the pending page now. ``{"cursor": …}`` or
        ``{"delivery": id}``: rewind there and send every page from that point again. A paused
        or disabled subscription becomes active."""
        subscription = access_subscription(organisation_of(request), subscription_id)
        serializer = RedeliverSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        delivery = None
        if "delivery" in data:
            delivery = access_delivery(subscription, data["delivery"])
        subscription = do_redeliver(
            subscription, cursor=data.get("cursor"), delivery=delivery, request=request
        )
        return _subscription_answer(subscription)


class MatchView(APIView):
    @extend_schema(
        operation_id="match",
        tags=["match"],
        request=MatchRequestSerializer,
        responses=MatchAnswerSerializer,
    )
    def post(self, request: Request) -> Response:
        """Which entries of the sets you may read match each signal: exact types exactly, pdq
        within Hamming distance (default 31; never more than a set allows), vpdq videos frame by
        frame within that distance and by the shares of frames matched (each set's thresholds;
        the answer gives both). ``position`` is the change-feed cursor the PDQ index answered
        as of."""
        org = organisation_of(request)
        serializer = MatchRequestSerializer(data=body_of(request))
        serializer.is_valid(raise_exception=True)
        queries, readable = check_queries(org, serializer.validated_data["signals"])
        check_match_quota(org, len(queries), request=request)
        return Response(do_match(org, queries, readable, request=request))
