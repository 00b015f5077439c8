"""One middleware that watches every request: a line in the request log, the request metrics,
and the rate-limit headers of the quotas the request was counted against.

It sits right after ``RequestIdMiddleware`` (so its line carries the request id) and outside
``ProblemMiddleware`` (so it sees the status the client gets).
"""

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import structlog
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from exchange import metrics
from exchange.problems import PROBLEM_CONTENT_TYPE
from exchange.ratelimit import Decision, ratelimit_headers

request_log = structlog.get_logger("hashx.request")

# Probes answer every few seconds: logged at DEBUG, whatever their status (a readiness 503
# while the exchange starts is no news).
_PROBES = ("/healthz", "/readyz", "/metrics")
_AUTH_STATUSES = (401, 403)


def endpoint_of(request: HttpRequest) -> str:
    """The route's name (``signals-publish``, ``admin:index``), never the raw path: one series
    per endpoint however many slugs and ids pass through it."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return str(match.view_name or match.route or "unnamed")


def _problem_slug(response: HttpResponse) -> str:
    """The problem type of a refusal: from a DRF answer's data, or a plain problem document."""
    data = getattr(response, "data", None)
    if (
        data is None
        and not response.streaming
        and response.get("Content-Type") == (PROBLEM_CONTENT_TYPE)
    ):
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return str(data["type"]).rsplit("/", 1)[-1]
    return "unknown"


def _caller(request: HttpRequest) -> dict[str, Any]:
    # Only a user authentication already set (the API's principal, a logged-in admin): reading
    # Django's lazy user here would load a session for every request that has none.
    user = request.__dict__.get("user")
    if user is None or isinstance(user, SimpleLazyObject):
        return {}
    organisation = getattr(user, "organisation", None)
    if organisation is not None:
        key = getattr(user, "key", None)
        return {"org": organisation.slug, "key_id": getattr(key, "key_id", "")}
    if getattr(user, "is_authenticated", False):
        return {"user": getattr(user, "username", "")}
    return {}


def _level(path: str, status: int) -> int:
    if path.startswith(_PROBES):
        return logging.DEBUG
    if status >= 500 and status != 503:
        return logging.ERROR
    if status == 503:
        return logging.WARNING
    return logging.INFO


class ObserveMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        status = response.status_code
        endpoint = endpoint_of(request)
        method = request.method or ""
        metrics.REQUESTS.labels(endpoint, method, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(endpoint, method).observe(seconds)
        if status in _AUTH_STATUSES and endpoint != "unmatched":
            metrics.AUTH_REFUSALS.labels(_problem_slug(response)).inc()
        decisions: list[Decision] = getattr(request, "hashx_ratelimits", [])
        for name, value in ratelimit_headers(decisions).items():
            response[name] = value
        request_log.log(
            _level(request.path, status),
            "request",
            method=method,
            path=request.path[:200],
            endpoint=endpoint,
            status=status,
            duration_ms=round(seconds * 1000, 1),
            **_caller(request),
        )
        return response
