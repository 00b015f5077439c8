import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.access import access_events, latest_checkpoint
from audit.actions.checkpoint import do_sign_checkpoint
from audit.api.serializers import AuditEventSerializer, CheckpointSerializer
from exchange.pagination import NewestFirst
from exchange.problems import invalid
from exchange.times import parse_when
from members.access import organisation_slugs
from members.principal import IsMember, organisation_of

_ACTION = re.compile(r"[a-z0-9_.]{1,100}")


class NewestEventsFirst(NewestFirst):
    ordering = "-id"
    page_size = 100
    max_page_size = 1000


class AuditEventList(ListAPIView):
    """Events where the caller's organisation is the actor or owns the object (who pulled my
    sets, who changed my keys), newest first, paged by opaque cursor."""

    permission_classes = [IsMember]
    serializer_class = AuditEventSerializer
    pagination_class = NewestEventsFirst

    @extend_schema(
        operation_id="audit_events",
        tags=["audit"],
        parameters=[
            OpenApiParameter(
                "action", OpenApiTypes.STR, description="exact action, or a prefix ending in `.`"
            ),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="occurred at or after"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="occurred before"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="page size, up to 1000"),
        ],
    )
    def get(self, request: Request) -> Response:
        return self.list(request)

    def get_queryset(self):  # type: ignore[no-untyped-def]
        events = access_events(organisation_of(self.request).pk)
        params = self.request.query_params
        action = params.get("action", "")
        if action and not _ACTION.fullmatch(action):
            message = "an action name or a prefix ending in '.': letters, digits, '_' and '.'"
            raise invalid("action", message)
        if action:
            events = (
                events.filter(action__startswith=action)
                if action.endswith(".")
                else events.filter(action=action)
            )
        for name, lookup in (("since", "occurred_at__gte"), ("until", "occurred_at__lt")):
            if params.get(name):
                when = parse_when(params[name])
                if when is None:
                    raise invalid(name, "not an ISO 8601 time with a zone")
                events = events.filter(**{lookup: when})
        return events

    def get_serializer_context(self):  # type: ignore[no-untyped-def]
        return {**super().get_serializer_context(), "org_slugs": self._org_slugs}

    def paginate_queryset(self, queryset):  # type: ignore[no-untyped-def]
        page = super().paginate_queryset(queryset)
        ids = {e.actor_org_id for e in page or []} | {e.owner_org_id for e in page or []}
        self._org_slugs = organisation_slugs(ids)
        return page


class CheckpointView(APIView):
    permission_classes = [IsMember]

    @extend_schema(operation_id="audit_checkpoint", tags=["audit"], responses=CheckpointSerializer)
    def get(self, request: Request) -> Response:
        """The latest signed checkpoint of the audit chain. Verify `signature` with the key
        `kid` published at /.well-known/hashx."""
        cp = latest_checkpoint() or do_sign_checkpoint()
        return Response(CheckpointSerializer(cp).data)
