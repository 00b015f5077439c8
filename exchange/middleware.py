import json
import re
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponse, UnreadablePostError
from django.utils.deprecation import MiddlewareMixin

from exchange.logs import bind_request, unbind_request
from exchange.problems import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_TYPES,
    echo,
    is_api_path,
    problem_body,
    problem_response,
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestIdMiddleware:
    """Take the caller's ``X-Request-ID`` (when it is a sane token) or make one; expose it as
    ``request.request_id`` for the audit log and echo it on the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        bind_request(request_id)
        try:
            response = self.get_response(request)
        finally:
            # The thread's next work (another request, a refusal by the gunicorn worker) is not
            # this request's.
            unbind_request()
        response["X-Request-ID"] = request_id
        return response


class RefuseNulMiddleware:
    """Outside the API (the admin, above all), refuse a request whose path or query holds a NUL
    character with a 400 naming where: no field can hold one (Postgres text refuses it), and an
    admin list filter passed it on, a 500. The API checks its own input field by field and
    answers each with its own problem (tests/exchange/test_fuzz.py holds it to that)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_api_path(request.path):
            return self.get_response(request)
        where = "path" if "\x00" in request.path else None
        for name, values in request.GET.lists():
            if where is None and ("\x00" in name or any("\x00" in v for v in values)):
                where = name.replace("\x00", "\\0")
        if where is None:
            return self.get_response(request)
        return problem_response("bad-request", f"{echo(where)}: NUL characters are not allowed")


# The problem type of an error answer a view built itself (the admin's 405 to a GET of its
# logout, WhiteNoise's 405): another 4xx is a bad request, another 5xx a server error.
_SLUG_BY_STATUS = {
    400: "bad-request", 401: "authentication-failed", 403: "forbidden", 404: "not-found",
    405: "method-not-allowed", 406: "not-acceptable", 408: "request-timeout", 409: "conflict",
    413: "payload-too-large", 414: "uri-too-long", 415: "unsupported-media-type",
    417: "expectation-failed", 429: "rate-limited", 431: "header-fields-too-large",
    500: "server-error", 503: "not-ready",
}  # fmt: skip


class ProblemMiddleware:
    """Every error the exchange answers is a problem document. Views and handlers write their
    own (with the reason); this turns any other error answer into one of its status, and a
    request body that could not be read to its end (the client stalled past the worker's read
    deadline, or went away) into a 408 or a 400 instead of a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code < 400
            or response.streaming
            or response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE)
            # TAXII's error messages are problem documents too, in TAXII's media type.
            or response.get("Content-Type", "").startswith("application/taxii+json")
        ):
            return response
        status = response.status_code
        slug = _SLUG_BY_STATUS.get(status, "server-error" if status >= 500 else "bad-request")
        try:
            detail = HTTPStatus(status).description
        except ValueError:
            detail = response.reason_phrase
        title = None if PROBLEM_TYPES[slug][0] == status else response.reason_phrase
        body = problem_body(slug, detail, status=status, title=title)
        response.content = json.dumps(body).encode()
        response["Content-Type"] = PROBLEM_CONTENT_TYPE
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        return response

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, UnreadablePostError):
            return None
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, TimeoutError):
            cause = cause.__cause__  # Django wraps the socket's error, maybe twice
        if cause is not None:
            return problem_response(
                "request-timeout", "The request body stopped arriving before its end."
            )
        return problem_response("bad-request", "The request body could not be read to its end.")


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or with ``HASHX_TRUSTED_PROXIES`` = n the address the n-th proxy from the
    right saw in ``X-Forwarded-For`` (entries further left are the client's to forge)."""
    hops = settings.HASHX_TRUSTED_PROXIES
    if hops:
        forwarded = [
            p.strip() for p in request.headers.get("X-Forwarded-For", "").split(",") if p.strip()
        ]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR") or None


# Paths that machines reach, each request authenticated by its own signature or token: no
# cookie, session, logged-in user or flash message ever serves them.
_MACHINE_PATHS = (
    "/api/", "/taxii2/", "/feeds/misp/", "/federation/", "/.well-known/", "/problems/",
    "/healthz", "/readyz", "/metrics",
)  # fmt: skip


class _BrowserOnly(MiddlewareMixin):
    """Django's middleware of the same name for the pages people use (the admin, the staff
    dashboards), passed by on the machine paths: on every signed request, three middleware
    that nothing there uses. (CSRF's stays whole: DRF's views exempt themselves.)"""

    def __call__(self, request: HttpRequest) -> Any:  # sync only, as the whole stack
        if request.path.startswith(_MACHINE_PATHS):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_BrowserOnly, sessions.SessionMiddleware):
    pass


class AuthenticationMiddleware(_BrowserOnly, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(_BrowserOnly, messages.MessageMiddleware):
    pass
