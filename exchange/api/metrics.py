"""``GET /metrics``: the Prometheus exposition, for the coalition's monitoring only.

It answers only ``Authorization: Bearer <HASHX_METRICS_TOKEN>``; with no token configured the
endpoint does not exist (404), and a caller without the token gets a 401 problem document.
"""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from exchange import metrics
from exchange.problems import problem_response


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.HASHX_METRICS_TOKEN
    if not token:
        return problem_response("not-found", "Metrics are off: HASHX_METRICS_TOKEN is not set.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        refusal = problem_response(
            "authentication-failed", "Send Authorization: Bearer <the exchange's metrics token>."
        )
        refusal["WWW-Authenticate"] = 'Bearer realm="hashx-metrics"'
        return refusal
    response = HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
