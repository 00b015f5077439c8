"""Unauthenticated endpoints: the landing page, health, readiness, the exchange's public identity,
problem types."""

from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer, TemplateHTMLRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange import health
from exchange.actions.identity import get_identity, key_endorsements, published_jwks
from exchange.api.serializers import (
    HealthSerializer,
    ProblemTypeSerializer,
    ReadinessSerializer,
    WellKnownSerializer,
)
from exchange.problem_docs import doc_for
from exchange.problems import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_TYPES,
    Problem,
    echo,
    problem_body,
    problem_type_uri,
    with_retry_after,
)
from signals.types import describe_types


class PublicView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]


class PageView(PublicView):
    """A page for people and a document for programs: HTML or JSON by the Accept header, the
    first renderer when the client takes anything. Errors stay problem documents (JSON), never
    an HTML error page."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = PROBLEM_CONTENT_TYPE
        return response


class LandingView(PageView):
    # A browser, or curl with no Accept header, gets the page; `Accept: application/json` JSON.
    renderer_classes = [TemplateHTMLRenderer, JSONRenderer]
    template_name = "exchange/landing.html"

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        """What this exchange is, and where its API, documentation and admin are."""
        public = settings.HASHX_PUBLIC_URL
        body = {
            "name": settings.HASHX_EXCHANGE_NAME,
            "exchange_id": get_identity().exchange_id,
            "api_version": settings.HASHX_API_VERSION,
            "public_url": public,
            "links": {
                "docs": public + reverse("docs"),
                "schema": public + reverse("schema"),
                "well_known": public + reverse("well-known"),
                "admin": public + reverse("admin:index"),
                "readyz": public + reverse("readyz"),
            },
        }
        return Response(body)


class HealthzView(PublicView):
    @extend_schema(operation_id="healthz", responses=HealthSerializer, tags=["health"])
    def get(self, request: Request) -> Response:
        """Liveness: the process answers. Checks nothing else."""
        return Response({"status": "ok"})


class ReadyzView(PublicView):
    @extend_schema(
        operation_id="readyz",
        tags=["health"],
        responses={
            200: ReadinessSerializer,
            503: OpenApiResponse(description="problem document naming what failed"),
        },
    )
    def get(self, request: Request) -> Response:
        """Readiness: Postgres, Redis and at least one Celery worker heartbeat are reachable."""
        checks = health.readiness()
        report = {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}
        failed = [c for c in checks if not c.ok]
        headers = {"Cache-Control": "no-store"}
        if not failed:
            return Response({"status": "ready", "checks": report}, headers=headers)
        detail = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        body = problem_body("not-ready", detail, failed=[c.name for c in failed], checks=report)
        response = Response(body, status=503, content_type=PROBLEM_CONTENT_TYPE, headers=headers)
        return with_retry_after(response)


class WellKnownView(PublicView):
    @extend_schema(
        operation_id="well_known_hashx", responses=WellKnownSerializer, tags=["identity"]
    )
    def get(self, request: Request) -> Response:
        """The exchange's identity: id, name, API version, public keys (JWKS), the next key
        endorsed by the current one during a rotation, signal types."""
        identity = get_identity()
        body = {
            "exchange_id": identity.exchange_id,
            "name": settings.HASHX_EXCHANGE_NAME,
            "api_version": settings.HASHX_API_VERSION,
            "api_root": f"{settings.HASHX_PUBLIC_URL}/api/{settings.HASHX_API_VERSION}/",
            "jwks": published_jwks(),
            "key_endorsements": key_endorsements(),
            "signal_types": describe_types(),
        }
        return Response(body, headers={"Cache-Control": "public, max-age=300"})


class ProblemTypeView(PageView):
    # Programs (and curl) get JSON; a browser following a problem's `type` gets the page.
    renderer_classes = [JSONRenderer, TemplateHTMLRenderer]
    template_name = "exchange/problem.html"

    @extend_schema(operation_id="problem_type", tags=["identity"], responses=ProblemTypeSerializer)
    def get(self, request: Request, slug: str) -> Response:
        """What a problem document's ``type`` means: what happened, the usual cause, how to fix
        it and a request that gets it right."""
        if slug not in PROBLEM_TYPES:
            raise Problem("not-found", f"No problem type {echo(slug)!r}.")
        status, title = PROBLEM_TYPES[slug]
        doc = doc_for(slug, title)
        body: dict[str, Any] = {
            "type": problem_type_uri(slug),
            "title": title,
            "status": status,
            "happened": doc.happened,
            "cause": doc.cause,
            "fix": doc.fix,
            "example": doc.example.replace("{public_url}", settings.HASHX_PUBLIC_URL),
        }
        if isinstance(request.accepted_renderer, TemplateHTMLRenderer):
            home = settings.HASHX_PUBLIC_URL + "/"
            body = {**body, "slug": slug, "name": settings.HASHX_EXCHANGE_NAME, "home": home}
        return Response(body)
