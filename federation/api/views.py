from drf_spectacular.utils import extend_schema
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from federation.actions.push import do_request_pull


class _Raw(BaseParser):
    media_type = "*/*"


class PushView(APIView):
    """A peer's webhook (push-assist): signed by the peer's exchange key, not by a member's."""

    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [_Raw]

    @extend_schema(operation_id="federation_push", tags=["federation"], request=None,
                   responses={204: None})  # fmt: skip
    def post(self, request: Request, exchange_id: str) -> Response:
        """A peer says its feed has news: this exchange pulls it now. Standard Webhooks
        headers, signed (``v1a``) by the peer's pinned exchange key."""
        do_request_pull(exchange_id, request._request.body, request.headers)
        return Response(status=204)
