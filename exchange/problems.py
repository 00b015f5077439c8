"""RFC 9457 problem documents: the one place where errors become HTTP answers.

Actions raise ``Problem`` (or a DRF exception); ``exception_handler`` turns any of them into
``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and, for
validation, an ``errors`` list of ``{"field", "message"}``.
"""

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.response import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"
ACCEPT_SIGNATURE = 'hashx=("@method" "@target-uri" "content-digest");alg="ed25519";tag="hashx"'

# slug -> (status, title): the catalogue of problem types, documented at /problems/<slug>.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "validation": (400, "The request is not valid"),
    "malformed-request": (400, "The request body could not be parsed"),
    "empty-body": (400, "The request body is empty"),
    "authentication-failed": (401, "Authentication failed"),
    # Request signatures (RFC 9421): each refusal names its reason.
    "signature-missing": (401, "Missing signature"),
    "signature-malformed": (401, "Malformed signature"),
    "signature-incomplete": (401, "Signature does not cover the required components"),
    "algorithm-unsupported": (401, "Unsupported signature algorithm"),
    "signature-stale": (401, "Signature created too long ago"),
    "signature-future": (401, "Signature created in the future"),
    "key-unknown": (401, "Unknown key"),
    "key-revoked": (401, "Revoked key"),
    "key-expired": (401, "Expired key"),
    "organisation-suspended": (401, "Organisation suspended"),
    "organisation-pending": (401, "Organisation not yet approved"),
    "digest-mismatch": (401, "Content digest does not match the body"),
    "signature-invalid": (401, "Bad signature"),
    "nonce-replayed": (401, "Replayed nonce"),
    "replay-check-unavailable": (503, "Replay protection unavailable"),
    "key-read-only": (403, "Read-only key"),
    "forbidden": (403, "Not allowed"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-acceptable": (406, "No acceptable representation"),
    "conflict": (409, "Conflicts with the current state"),
    "idempotency-key-in-flight": (409, "A request with this Idempotency-Key is still in flight"),
    "cursor-expired": (410, "The cursor is older than tombstone retention"),
    "proof-of-possession-failed": (400, "The new key did not prove possession"),
    "payload-too-large": (413, "The request body is too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "idempotency-key-mismatch": (422, "The Idempotency-Key was used for a different request"),
    "rate-limited": (429, "Too many requests"),
    "server-error": (500, "Internal server error"),
    "not-ready": (503, "The exchange is not ready"),
}


def problem_type_uri(slug: str) -> str:
    return f"{settings.HASHX_PUBLIC_URL}/problems/{slug}"


def problem_body(
    slug: str, detail: str, *, status: int | None = None, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    default_status, default_title = PROBLEM_TYPES[slug]
    return {
        "type": problem_type_uri(slug),
        "title": title or default_title,
        "status": status or default_status,
        "detail": detail,
        **extra,
    }


def problem_response(slug: str, detail: str, **extra: Any) -> JsonResponse:
    """A problem document for plain Django views (DRF views raise ``Problem`` instead)."""
    body = problem_body(slug, detail, **extra)
    return JsonResponse(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE)


class Problem(exceptions.APIException):
    """A domain error with a problem type; raise it from ``check_…`` actions."""

    def __init__(self, slug: str, detail: str, **extra: Any) -> None:
        status, title = PROBLEM_TYPES[slug]
        self.slug = slug
        self.status_code = status
        self.title = title
        self.extra = extra
        super().__init__(detail)


_DRF_SLUGS: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.ValidationError, "validation"),
    (exceptions.ParseError, "malformed-request"),
    (exceptions.NotAuthenticated, "signature-missing"),
    (exceptions.AuthenticationFailed, "authentication-failed"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not-found"),
    (exceptions.MethodNotAllowed, "method-not-allowed"),
    (exceptions.NotAcceptable, "not-acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported-media-type"),
    (exceptions.Throttled, "rate-limited"),
]


def field_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested error structure into ``[{"field": "signals.3.value", "message"}]``."""
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            name = (
                prefix if key == "non_field_errors" else f"{prefix}.{key}" if prefix else str(key)
            )
            out += field_errors(value, name)
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [{"field": prefix, "message": str(item)} for item in detail]
        out = []
        for index, item in enumerate(detail):
            if item:
                out += field_errors(item, f"{prefix}.{index}" if prefix else str(index))
        return out
    return [{"field": prefix, "message": str(detail)}]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every API error leaves as a problem document."""
    # Imported here: rest_framework.views loads the authentication classes, which raise Problem.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, RequestDataTooBig):
        exc = Problem(
            "payload-too-large", f"The body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return None

    if isinstance(exc, Problem):
        body = problem_body(exc.slug, str(exc.detail), **exc.extra)
    else:
        slug = next((s for cls, s in _DRF_SLUGS if isinstance(exc, cls)), "server-error")
        if isinstance(exc, exceptions.ValidationError):
            errors = field_errors(exc.detail)
            detail = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors[:5])
            body = problem_body(slug, detail, errors=errors)
        elif isinstance(exc, exceptions.NotAuthenticated):
            body = problem_body(
                slug,
                "Sign the request (RFC 9421, Ed25519) with your organisation's "
                "key: see the Accept-Signature header and /api/v1/docs.",
            )
        else:
            body = problem_body(slug, str(exc.detail), status=exc.status_code)
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    if response.status_code == 401:
        # RFC 9421 section 5.1: tell the client what to sign.
        response["WWW-Authenticate"] = 'Signature realm="hashx"'
        response["Accept-Signature"] = ACCEPT_SIGNATURE
    return response


@csrf_exempt  # else a POST to an unknown path met Django's CSRF check: an HTML 403
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Catch-all for unknown paths under /api/: a problem document, never an HTML page."""
    return problem_response("not-found", f"No endpoint at {request.path}.")


def is_api_path(path: str) -> bool:
    """Paths answered with problem documents (the admin answers pages)."""
    return path.startswith(("/api/", "/.well-known/", "/problems/", "/readyz", "/healthz"))


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a problem document for API paths, Django's page elsewhere."""
    if is_api_path(request.path):
        return problem_response(
            "server-error", "The exchange failed to answer; the error is logged."
        )
    from django.views.defaults import server_error as django_server_error

    return django_server_error(request)
