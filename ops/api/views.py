from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from members.principal import organisation_of
from ops.stats import member_stats


class StatsView(APIView):
    @extend_schema(operation_id="stats", tags=["stats"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        """Your organisation's figures: signals published per day (14 days), the sets you own
        (active entries, tombstones, opinions), your webhooks' health, failed batches, last
        publish and pull, keys expiring within 14 days, and what is left of your quotas."""
        return Response(member_stats(organisation_of(request)))
