"""The staff dashboard and member pages (admin views: staff only, served under /admin/ops/).

Every chart is SVG drawn here (ops/charts.py); the pages load nothing from another origin and
say so in their Content-Security-Policy."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from federation.actions.status import peer_statuses
from ops import stats
from ops.charts import Series, stacked_bars, stacked_columns

# Only this exchange's own scripts, styles and images (the admin's); no plugin, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

_OPINION_COLOURS = ["#009E73", "#D55E00", "#E69F00"]
_WEBHOOK_COLOURS = ["#009E73", "#E69F00"]
_LAG_COLOURS = ["#56B4E9"]


def with_csp(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    return wrapped


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, **extra}


@with_csp
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    days = stats.last_days(now.date())
    figures = stats.exchange_figures(now, days[0])
    published = figures.published
    members = sorted(published)
    per_day = stacked_columns(
        "Signals published per day per member",
        [day.strftime("%d %b") for day in days],
        [Series(slug, [published[slug].get(day, 0) for day in days]) for slug in members],
    )
    sets = figures.sets
    set_labels = [figures.slug for figures in sets]
    entries = stacked_bars(
        "Active entries and tombstones per set",
        set_labels,
        [
            Series("active", [f.active for f in sets]),
            Series("tombstones", [f.tombstones for f in sets]),
        ],
    )
    opinions = stacked_bars(
        "Opinions on active entries per set",
        set_labels,
        [
            Series("positive", [f.positive for f in sets]),
            Series("negative", [f.negative for f in sets]),
            Series("disputed", [f.disputed for f in sets]),
        ],
        colours=_OPINION_COLOURS,
    )
    hooks = figures.webhooks
    webhooks = stacked_bars(
        "Webhook deliveries per subscription (last 24 h delivered, now pending)",
        [f"{h.organisation} {h.url.split('//')[-1]}" for h in hooks],
        [
            Series("delivered", [h.delivered_24h for h in hooks]),
            Series("pending", [h.pending for h in hooks]),
        ],
        colours=_WEBHOOK_COLOURS,
    )
    failures = stacked_columns(
        "Batches that failed per day",
        [day.strftime("%d %b") for day in days],
        [Series("failed", [figures.failed_per_day.get(day, 0) for day in days])],
    )
    peers = peer_statuses(now)
    peers_lag = stacked_bars(
        "Peers' lag (seconds since the last complete pull began)",
        [f"{p.name} ({p.state})" for p in peers],
        [Series("lag", [round(p.lag_seconds) for p in peers])],
        colours=_LAG_COLOURS,
    )
    return TemplateResponse(
        request,
        "ops/dashboard.html",
        _context(
            request,
            "Exchange dashboard",
            charts=[
                ("Signals published per day per member", per_day),
                ("Active entries and tombstones per set", entries),
                ("Opinions on active entries per set", opinions),
                ("Webhook deliveries per subscription", webhooks),
                ("Batches that failed per day", failures),
                ("Peers' lag", peers_lag),
            ],
            peers=peers,
            hooks=hooks,
            failed=figures.failed_batches,
            organisations=figures.organisations,
        ),
    )


@with_csp
def member(request: HttpRequest, slug: str) -> HttpResponse:
    organisation = stats.organisation_or_404(slug)
    now = timezone.now()
    days = stats.last_days(now.date())
    page = stats.member_page(organisation, now, days[0])
    published = page.published
    chart = stacked_columns(
        f"Signals {organisation.slug} published per day",
        [day.strftime("%d %b") for day in days],
        [Series(organisation.slug, [published.get(day, 0) for day in days])],
    )
    return TemplateResponse(
        request,
        "ops/member.html",
        _context(
            request,
            f"Member: {organisation.name}",
            organisation=organisation,
            chart=chart,
            figures=page.figures,
            sets=page.sets,
            hooks=page.webhooks,
        ),
    )
