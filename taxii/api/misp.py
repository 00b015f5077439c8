"""The MISP feed of a set (``/feeds/misp/{set}/…``): what a MISP instance fetches when the
feed is added with the URL ``…/feeds/misp/{set}`` and an ``Authorization: Bearer <feed token>``
header. Members may sign these requests instead."""

import json
import re
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.views import APIView

from exchange.problems import Problem
from members.principal import organisation_of, scope_of
from members.tokens import FEED_AUTHENTICATION
from taxii.access import access_feed_set, exchange_id
from taxii.actions import do_read_misp_event, misp_hashes, misp_manifest

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class AnyAccept(BaseContentNegotiation):
    """The feed's files have one form each, whatever the fetcher's Accept says."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class MispView(APIView):
    authentication_classes = FEED_AUTHENTICATION
    content_negotiation_class = AnyAccept
    schema = None  # MISP's feed format; not part of /api/v1/schema


class ManifestView(MispView):
    def get(self, request: Request, slug: str) -> HttpResponse:
        hash_set = access_feed_set(organisation_of(request), scope_of(request), slug)
        body = misp_manifest(exchange_id(), hash_set)
        return HttpResponse(json.dumps(body), content_type="application/json")


class HashesView(MispView):
    def get(self, request: Request, slug: str) -> StreamingHttpResponse:
        hash_set = access_feed_set(organisation_of(request), scope_of(request), slug)
        lines = (line.encode() for line in misp_hashes(exchange_id(), hash_set, request=request))
        return StreamingHttpResponse(lines, content_type="text/csv")


class EventView(MispView):
    def get(self, request: Request, slug: str, event: str) -> HttpResponse:
        hash_set = access_feed_set(organisation_of(request), scope_of(request), slug)
        body = (
            do_read_misp_event(exchange_id(), hash_set, event, request=request)
            if _UUID.fullmatch(event)
            else None
        )
        if body is None:
            raise Problem("not-found", f"No event {event[:40]} in the feed of {slug}")
        return HttpResponse(json.dumps(body), content_type="application/json")
