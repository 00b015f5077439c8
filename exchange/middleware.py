import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from exchange.problems import is_api_path

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
        response = self.get_response(request)
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
        return HttpResponseBadRequest(f"{where}: NUL characters are not allowed")


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
