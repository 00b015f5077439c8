"""The exchange's Prometheus metrics: every ``hashx_…`` series, defined here and nowhere else.

Counters and histograms are written by whichever process does the work (gunicorn workers,
Celery workers and beat) into ``PROMETHEUS_MULTIPROC_DIR`` (``$HASHX_VAR_DIR/metrics`` unless
set: this module chooses it as it is imported, since its series are made then, whichever code
imports it first; ``manage.py bootstrap`` empties it before the processes start), and
``/metrics`` adds them up across processes at scrape time. What is a state of the data rather
than an event (queue depth, audit seal lag, index age, feed lag) is read at scrape time by the
*scrape gauges* the apps register with ``scrape_gauge`` (the floor plan keeps this module below
them), which is also the hook for federation's peers' lag.
"""

import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exchange import embedded

log = logging.getLogger(__name__)


def _process_identifier() -> str:
    # Host and pid: compose's web, worker and beat share the directory (the var volume), and
    # each container numbers its processes from 1.
    return f"{socket.gethostname()}-{os.getpid()}"


os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(embedded.var_dir() / "metrics"))
if os.environ["PROMETHEUS_MULTIPROC_DIR"]:
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Latencies from a millisecond to a minute: requests, matches.
_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# From a second to an hour: a batch's merge, a change's way to a webhook.
_SLOW = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)

REQUESTS = Counter(
    "hashx_http_requests",
    "HTTP requests answered, by endpoint (route name), method and status.",
    ["endpoint", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "hashx_http_request_duration_seconds",
    "Time to answer an HTTP request (to the first byte of a streamed answer), by endpoint.",
    ["endpoint", "method"],
    buckets=_FAST,
)
AUTH_REFUSALS = Counter(
    "hashx_auth_refusals",
    "Requests refused by authentication, by reason (the problem type).",
    ["reason"],
)
RATE_LIMITED = Counter(
    "hashx_rate_limited",
    "Requests refused 429 because an organisation was over a quota, by quota.",
    ["quota"],
)
SIGNALS_PUBLISHED = Counter(
    "hashx_signals_published",
    "Signals accepted for merging (published items that passed validation).",
)
SIGNALS_REJECTED = Counter("hashx_signals_rejected", "Published items rejected at validation.")
BATCHES = Counter("hashx_batches", "Batches that finished merging, by outcome.", ["outcome"])
BATCH_SECONDS = Histogram(
    "hashx_batch_duration_seconds",
    "From a batch's upload to the end of its merge.",
    buckets=_SLOW,
)
WEBHOOK_DELIVERIES = Counter(
    "hashx_webhook_deliveries",
    "Webhook delivery attempts, by outcome (delivered, retry, disabled, cancelled, stale).",
    ["outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "hashx_webhook_delivery_latency_seconds",
    "From a page of changes being cut (right after they were published) to its delivery.",
    buckets=_SLOW,
)
MATCH_QUERIES = Counter("hashx_match_queries", "Signals looked up by POST /api/v1/match.")
MATCH_SECONDS = Histogram(
    "hashx_match_duration_seconds",
    "Time to answer one POST /api/v1/match (all of its queries).",
    buckets=_FAST,
)
REPLICA_READS = Counter(
    "hashx_replica_reads",
    "Feed reads (pages, NDJSON streams, snapshots, TAXII and MISP pages) while a read replica is"
    " configured, by outcome: served (by the replica), behind (it had not replayed past what the"
    " reader needs: the primary served), down (unreachable or lost mid-read: the primary served).",
    ["outcome"],
)
GC_PAUSE_SECONDS = Histogram(
    "hashx_gc_pause_seconds",
    "Pauses of a web worker for Python's cyclic garbage collection, by generation (every thread"
    " of the worker waits them out).",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)


# --- scrape-time gauges ------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One sample of a scrape gauge: its labels' values (in the gauge's label order) and value."""

    labels: tuple[str, ...]
    value: float


@dataclass(frozen=True)
class ScrapeGauge:
    name: str
    documentation: str
    labels: tuple[str, ...]
    read: Callable[[], Iterable[Reading]]


_SCRAPE_GAUGES: dict[str, ScrapeGauge] = {}


def scrape_gauge(
    name: str, documentation: str, read: Callable[[], Iterable[Reading]], labels: Iterable[str] = ()
) -> None:
    """Register a gauge read when /metrics is scraped (apps call it from ``AppConfig.ready``).
    ``read`` answers the current samples; one that fails is logged and left out of that scrape,
    never failing the others."""
    assert name.startswith("hashx_"), name
    _SCRAPE_GAUGES[name] = ScrapeGauge(name, documentation, tuple(labels), read)


class _ScrapeCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        for gauge in _SCRAPE_GAUGES.values():
            try:
                readings = list(gauge.read())
            except Exception:
                log.warning("metrics: could not read %s", gauge.name, exc_info=True)
                continue
            family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=gauge.labels)
            for reading in readings:
                family.add_metric(list(reading.labels), reading.value)
            yield family


# --- exposition --------------------------------------------------------------------------------


def multiproc_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def reset_multiproc_dir() -> None:
    """Empty the multiprocess directory: called once as the exchange starts (bootstrap), before
    any of its processes write there, so counters start from zero and no dead pid's files
    linger."""
    directory = multiproc_dir()
    if directory is None:
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def exposition() -> bytes:
    """Every process's counters and histograms added up, and the scrape gauges read now."""
    registry = CollectorRegistry()
    if multiproc_dir() is not None:
        multiprocess.MultiProcessCollector(registry)
    else:  # a single process (a shell, a test without the directory): its own values
        for metric in _ALL:
            registry.register(metric)
    registry.register(_ScrapeCollector())
    return generate_latest(registry)


_ALL = [
    REQUESTS,
    REQUEST_SECONDS,
    AUTH_REFUSALS,
    RATE_LIMITED,
    SIGNALS_PUBLISHED,
    SIGNALS_REJECTED,
    BATCHES,
    BATCH_SECONDS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_SECONDS,
    MATCH_QUERIES,
    MATCH_SECONDS,
    REPLICA_READS,
    GC_PAUSE_SECONDS,
]
