"""RFC 9457 problem documents: the one place where errors become HTTP answers.

Actions raise ``Problem`` (or a DRF exception); ``exception_handler`` turns any of them into
``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and, for
validation, an ``errors`` list of ``{"field", "message"}``. Django's error handlers (400, 403,
404, 500 and the CSRF failure view) answer problem documents too, and so does the gunicorn worker
for what it refuses before Django (exchange/gunicorn_worker.py). Details are bounded: request
input quoted in one goes through ``echo``, and no detail or field message exceeds its cap.

A service the exchange depends on being down (PostgreSQL, Redis) is no server error: wherever
the request was when it found out (authentication, a view, a middleware), it answers 503
``service-unavailable`` with ``Retry-After``, as does every other 503.
"""

import sys
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.response import Response

from exchange.logs import current_request_id

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
    # Feed tokens (members/tokens.py): read-only, and only on the feed endpoints.
    "token-unknown": (401, "Unknown feed token"),
    "token-revoked": (401, "Revoked feed token"),
    "token-expired": (401, "Expired feed token"),
    "token-not-accepted": (403, "A feed token is not accepted here"),
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
    "not-federable": (422, "Only TLP:CLEAR and TLP:GREEN sets may be federated"),
    "rate-limited": (429, "Too many requests"),
    # Refused before a view runs: by the gunicorn worker, or by Django's own checks.
    "bad-request": (400, "The request is malformed"),
    "request-timeout": (408, "The request did not arrive in time"),
    "uri-too-long": (414, "The request line is too long"),
    "expectation-failed": (417, "The expectation cannot be met"),
    "header-fields-too-large": (431, "The request's header fields are too large"),
    "server-error": (500, "Internal server error"),
    "not-ready": (503, "The exchange is not ready"),
    "service-unavailable": (503, "A service the exchange depends on is unavailable"),
}

# What a client is asked to wait before retrying a 503: about how long a restarted PostgreSQL
# or Redis takes to answer again.
RETRY_AFTER_SECONDS = 5

# The errors that mean "PostgreSQL or Redis cannot be reached now" (refused, reset, timed out,
# restarting, a connection that broke mid-request), not "this request is wrong".
_UNAVAILABLE: list[tuple[tuple[type[BaseException], ...], str]] = [
    ((OperationalError, InterfaceError), "The database"),
    ((redis.ConnectionError, redis.TimeoutError), "Redis"),
]


# Caps on what a problem document repeats: request input quoted in a detail (a key id, a path, a
# header value), a whole detail, and each message and field name of a validation error.
ECHO_CHARS = 80
MAX_DETAIL_CHARS = 500
MAX_FIELD_CHARS = 200


def bounded(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: cut in the middle, where an ellipsis stands for
    what is left out, so that the reason at the end of a message that quotes input survives."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "\u2026" + text[len(text) - (limit - 1 - head) :]


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """Request input (a key id, a slug, a path) as a detail quotes it: its first ``limit``
    characters, so the reason stays readable however long the input was."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def problem_type_uri(slug: str) -> str:
    return f"{settings.HASHX_PUBLIC_URL}/problems/{slug}"


def problem_body(
    slug: str, detail: str, *, status: int | None = None, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    default_status, default_title = PROBLEM_TYPES[slug]
    body = {
        "type": problem_type_uri(slug),
        "title": title or default_title,
        "status": status or default_status,
        "detail": bounded(detail, MAX_DETAIL_CHARS),
        **extra,
    }
    # The X-Request-ID of the request answered: what to quote to staff, who find it in the logs
    # and on the request's audit events.
    request_id = current_request_id()
    if request_id:
        body["request_id"] = request_id
    return body


def problem_response(slug: str, detail: str, **extra: Any) -> JsonResponse:
    """A problem document for plain Django views (DRF views raise ``Problem`` instead)."""
    body = problem_body(slug, detail, **extra)
    response = JsonResponse(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE)
    return with_retry_after(response)


def with_retry_after[R: HttpResponse](response: R) -> R:
    """Every 503 tells the client when to try again (RFC 9110 section 10.2.3)."""
    if response.status_code == 503 and not response.has_header("Retry-After"):
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class Problem(exceptions.APIException):
    """A domain error with a problem type; raise it from ``check_…`` actions."""

    def __init__(
        self, slug: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        status, title = PROBLEM_TYPES[slug]
        self.slug = slug
        self.status_code = status
        self.title = title
        # Sent with the answer (a Retry-After, a 429's RateLimit headers); ``extra`` goes into
        # the problem document.
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail)


def invalid(field: str, message: str) -> Problem:
    """A 400 ``validation`` problem about one field: ``errors`` names it, the detail quotes it."""
    return Problem(
        "validation", f"{field}: {message}", errors=[{"field": field, "message": message}]
    )


def unavailable(exc: BaseException | None) -> Problem | None:
    """The 503 problem for an error that means a service is down, else None."""
    for classes, service in _UNAVAILABLE:
        if isinstance(exc, classes):
            return Problem(
                "service-unavailable",
                f"{service} is unavailable; retry in {RETRY_AFTER_SECONDS} s.",
            )
    return None


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
            return [_field_error(prefix, item) for item in detail]
        out = []
        for index, item in enumerate(detail):
            if item:
                out += field_errors(item, f"{prefix}.{index}" if prefix else str(index))
        return out
    return [_field_error(prefix, detail)]


def _field_error(field: str, message: Any) -> dict[str, str]:
    # Messages may quote the input (DRF's "is not a valid choice" does, whole).
    return {
        "field": bounded(field, MAX_FIELD_CHARS),
        "message": bounded(str(message), MAX_DETAIL_CHARS),
    }


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
    else:
        exc = unavailable(exc) or exc

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
    for name, value in (exc.headers if isinstance(exc, Problem) else {}).items():
        response[name] = value
    return with_retry_after(response)


def _not_found(request: HttpRequest) -> HttpResponse:
    return problem_response("not-found", f"No endpoint at {echo(request.path)}.")


@csrf_exempt  # else a POST to an unknown path met Django's CSRF check: an HTML 403
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Catch-all for unknown paths under /api/: a problem document, never an HTML page."""
    return _not_found(request)


def is_api_path(path: str) -> bool:
    """Paths answered with problem documents (the admin answers pages)."""
    return path.startswith(("/api/", "/.well-known/", "/problems/", "/readyz", "/healthz"))


# Django's error handlers (exchange/urls.py): every error is a problem document, the admin's
# included. None of them reads the Host header: a DisallowedHost 400 would raise again.


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: Django's SuspiciousOperation and BadRequest, raised before or in a view."""
    if isinstance(exception, DisallowedHost):
        return problem_response(
            "bad-request", "The Host header does not name this exchange; see ALLOWED_HOSTS."
        )
    if isinstance(exception, RequestDataTooBig):
        return problem_response(
            "payload-too-large", f"The body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        )
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)):
        return problem_response("bad-request", "The form holds too many fields or files.")
    return problem_response("bad-request", "The request is malformed or was refused as unsafe.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403."""
    return problem_response("forbidden", "You may not do this.")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404."""
    return _not_found(request)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a 503 problem document wherever a service the exchange depends on was found
    down (Django calls it while handling the error, which ``sys.exc_info`` names: raised outside
    a DRF view, in a middleware or an admin page, it never reached ``exception_handler``); else a
    500 problem document."""
    down = unavailable(sys.exc_info()[1])
    if down is not None:
        return problem_response(down.slug, str(down.detail))
    return problem_response("server-error", "The exchange failed to answer; the error is logged.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a form post (the admin's) without a valid CSRF token."""
    return problem_response("forbidden", f"CSRF verification failed: {echo(reason, 200)}")
