"""TAXII 2.1 (OASIS), read only: discovery, one API root, collections (the sets the caller may
read), their objects, manifest, and objects by id. Callers sign their requests like any member,
or present a feed token. Every answer is ``application/taxii+json;version=2.1``; every error a
TAXII error message that is an RFC 9457 problem document too (``title``, ``description``,
``http_status`` beside ``type``, ``status``, ``detail``)."""

from datetime import datetime
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from exchange.problems import Problem, invalid
from members.principal import organisation_of, scope_of
from members.tokens import FEED_AUTHENTICATION
from signals.feed.positions import START
from signals.feed.reads import held_cursor
from taxii.access import access_collection, access_collections, exchange_id
from taxii.actions import Page, do_read_objects, do_read_page
from taxii.stix import STIX_MEDIA_TYPE

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
API_ROOT = "hashx"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


class TaxiiRenderer(BaseRenderer):
    """Lets DRF's negotiation accept ``application/taxii+json`` (the views write the body)."""

    media_type = "application/taxii+json"
    format = "taxii"

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        return orjson.dumps(data)


def taxii_answer(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    return HttpResponse(
        orjson.dumps(body), status=status, content_type=TAXII_MEDIA_TYPE, headers=headers
    )


def _check_accept(request: HttpRequest) -> None:
    """A TAXII media type of another version than 2.1 is 406 (TAXII 2.1 content negotiation);
    another media type is 406 through DRF's negotiation."""
    for item in request.headers.get("Accept", "").split(","):
        kind, *params = (part.strip().lower() for part in item.split(";"))
        if kind == "application/taxii+json" and any(
            p.startswith("version=") and p != "version=2.1" for p in params
        ):
            raise Problem("not-acceptable", "This server speaks TAXII 2.1 only")


class TaxiiView(APIView):
    authentication_classes = FEED_AUTHENTICATION
    renderer_classes = [TaxiiRenderer]
    schema = None  # TAXII has its own specification; not part of /api/v1/schema

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        _check_accept(request._request)
        super().initial(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> HttpResponse:  # type: ignore[override]
        response = super().handle_exception(exc)
        body = dict(response.data)
        body.setdefault("title", "Error")
        body["description"] = body.get("detail", "")
        body["http_status"] = str(response.status_code)
        body["error_code"] = str(body.get("type", "")).rsplit("/", 1)[-1]
        answer = taxii_answer(body, response.status_code)
        for name in ("WWW-Authenticate", "Retry-After", "Allow"):
            if name in response:
                answer[name] = response[name]
        return answer


def _root_url() -> str:
    return f"{settings.HASHX_PUBLIC_URL}/taxii2/{API_ROOT}/"


class DiscoveryView(TaxiiView):
    def get(self, request: Request) -> HttpResponse:
        return taxii_answer(
            {
                "title": "Hash Exchange",
                "description": "The sets you may read, as TAXII 2.1 collections of STIX 2.1"
                " indicators.",
                "default": _root_url(),
                "api_roots": [_root_url()],
            }
        )


class ApiRootView(TaxiiView):
    def get(self, request: Request) -> HttpResponse:
        return taxii_answer(
            {
                "title": "Hash Exchange sets",
                "versions": [TAXII_MEDIA_TYPE],
                "max_content_length": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
            }
        )


def _collection(collection_id: str, hash_set: Any) -> dict[str, Any]:
    return {
        "id": collection_id,
        "title": hash_set.name,
        "description": hash_set.description or f"The set {hash_set.slug}",
        "alias": hash_set.slug,
        "can_read": True,
        "can_write": False,
        "media_types": [STIX_MEDIA_TYPE],
    }


class CollectionsView(TaxiiView):
    def get(self, request: Request) -> HttpResponse:
        found = access_collections(organisation_of(request), scope_of(request))
        collections = [_collection(cid, s) for cid, s in found.items()]
        return taxii_answer({"collections": collections} if collections else {})


class CollectionView(TaxiiView):
    def get(self, request: Request, collection_id: str) -> HttpResponse:
        hash_set = access_collection(organisation_of(request), scope_of(request), collection_id)
        return taxii_answer(_collection(collection_id, hash_set))


def _limit(raw: str | None) -> int:
    """TAXII's ``limit``: a positive whole number; the server serves at most MAX_LIMIT."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or int(raw) < 1:
        raise invalid("limit", "a whole number from 1")
    return min(int(raw), MAX_LIMIT)


def _added_after(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        message = "a timestamp with a zone, e.g. 2026-01-01T00:00:00.000Z"
        raise invalid("added_after", message)
    return moment


def _listed(raw: str | None) -> list[str]:
    return [item for item in (raw or "").split(",") if item]


def _page(request: Request, collection_id: str) -> Page:
    """The page the query asks for, after the match filters (TAXII 2.1 section 3.4)."""
    params = request.query_params
    hash_set = access_collection(organisation_of(request), scope_of(request), collection_id)
    limit = _limit(params.get("limit"))
    added_after = _added_after(params.get("added_after"))
    types, ids = _listed(params.get("match[type]")), _listed(params.get("match[id]"))
    versions = _listed(params.get("match[version]")) or ["last"]
    spec_versions = _listed(params.get("match[spec_version]"))
    if (types and "indicator" not in types) or (spec_versions and "2.1" not in spec_versions):
        return Page()
    exchange = exchange_id()
    if ids:
        page = do_read_objects(exchange, hash_set, ids[:MAX_LIMIT], added_after=added_after,
                               request=request)  # fmt: skip
    else:
        after = held_cursor(params["next"]) if params.get("next") else START
        page = do_read_page(exchange, hash_set, after, limit, added_after=added_after,
                            request=request)  # fmt: skip
    # Only the latest version of an entry is kept: it is its first, last and every version.
    if not {"first", "last", "all"} & set(versions):
        kept = [i for i, o in enumerate(page.indicators) if o["modified"] in versions]
        page.indicators = [page.indicators[i] for i in kept]
        page.added = [page.added[i] for i in kept]
    return page


def _envelope(page: Page, key: str, items: list[Any]) -> HttpResponse:
    body: dict[str, Any] = {"more": page.more}
    if page.next:
        body["next"] = page.next
    if items:
        body[key] = items
    headers = {}
    if page.added:
        headers = {
            "X-TAXII-Date-Added-First": page.added[0],
            "X-TAXII-Date-Added-Last": page.added[-1],
        }
    return taxii_answer(body, headers=headers)


class ObjectsView(TaxiiView):
    def get(self, request: Request, collection_id: str) -> HttpResponse:
        page = _page(request, collection_id)
        return _envelope(page, "objects", page.indicators)


class ManifestView(TaxiiView):
    def get(self, request: Request, collection_id: str) -> HttpResponse:
        page = _page(request, collection_id)
        records = [
            {
                "id": obj["id"],
                "date_added": added,
                "version": obj["modified"],
                "media_type": STIX_MEDIA_TYPE,
            }
            for obj, added in zip(page.indicators, page.added, strict=True)
        ]
        return _envelope(page, "objects", records)


def _one(request: Request, collection_id: str, object_id: str) -> Page:
    hash_set = access_collection(organisation_of(request), scope_of(request), collection_id)
    page = do_read_objects(
        exchange_id(),
        hash_set,
        [object_id],
        added_after=_added_after(request.query_params.get("added_after")),
        request=request,
    )
    if not page.indicators:
        raise Problem("not-found", f"No object {object_id[:80]} in this collection")
    return page


class ObjectView(TaxiiView):
    def get(self, request: Request, collection_id: str, object_id: str) -> HttpResponse:
        page = _one(request, collection_id, object_id)
        return _envelope(page, "objects", page.indicators)


class VersionsView(TaxiiView):
    def get(self, request: Request, collection_id: str, object_id: str) -> HttpResponse:
        page = _one(request, collection_id, object_id)
        return _envelope(page, "versions", [obj["modified"] for obj in page.indicators])


class NotFoundView(TaxiiView):
    """Anything else under /taxii2/: a TAXII error, never an HTML page."""

    def get(self, request: Request, rest: str = "") -> HttpResponse:
        raise Problem("not-found", "No such TAXII resource")
