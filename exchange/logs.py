"""Structured logs: every line through structlog, as JSON (``HASHX_LOG_FORMAT=json``, compose)
or as readable text (``make run``), and every line written while a request or a task runs
carries that request's id.

The request id lives in a context variable (structlog's contextvars): ``RequestIdMiddleware``
binds it for the request's thread, ``exchange.enqueue`` sends it with each task as the message
header ``hashx_request_id``, and the Celery signal handlers here bind it again in the worker
while the task runs, so the logs of a request and of the work it started share one id.
Django's and Celery's own loggers go through the same formatter (``logging_config``).
"""

import logging
import time
from typing import Any

import structlog
from celery import signals as celery_signals

REQUEST_ID_HEADER = "hashx_request_id"

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """Django's LOGGING: one handler on stderr whose formatter renders structlog's events and
    the standard library's records alike, as JSON or as text."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                "foreign_pre_chain": [*_SHARED, structlog.stdlib.ExtraAdder()],
            }
        },
        "filters": {"expected_503": {"()": "exchange.logs.DropExpected503"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "INFO"},
            # A refused Host is answered 400 and shows in the request log; Django would log it
            # again as an error, with a traceback and the whole header, for anyone who sends one.
            "django.security.DisallowedHost": {"level": "CRITICAL"},
            # The request log (hashx.request) has one line per request; Django's would repeat
            # every 4xx as a warning.
            "django.request": {"level": "ERROR", "filters": ["expected_503"]},
            # One line per task from hashx.task instead of Celery's "received" and "succeeded",
            # and beat says nothing for each task it sends (webhook dispatch runs every 2 s).
            "celery.app.trace": {"level": "WARNING"},
            "celery.worker.strategy": {"level": "WARNING"},
            "celery.beat": {"level": "WARNING"},
            # gunicorn's own messages through the same formatter (gunicorn_conf.logconfig_dict);
            # its access log is off: hashx.request has a line per request, with more in it.
            "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


class DropExpected503(logging.Filter):
    """Django logs every 5xx answer as an error; a 503 is the exchange saying that a service it
    needs is down or starting (readiness during start-up, PostgreSQL restarting), which the
    request log already shows at the right level: not an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "django.request" and getattr(record, "status_code", 0) == 503)


def configure() -> None:
    """structlog's own pipeline, ending in the standard library (and so in LOGGING's
    formatter). Called once at import of the settings."""
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def current_request_id() -> str:
    """The id of the request (or of the request that started the task) being served, or ''."""
    return str(structlog.contextvars.get_contextvars().get("request_id", ""))


def bind_request(request_id: str) -> None:
    """Start a request's context: everything logged on this thread until the next one carries
    its id."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)


def unbind_request() -> None:
    structlog.contextvars.clear_contextvars()


# --- Celery: a task runs in the context of the request that enqueued it ---------------------------

task_log = structlog.get_logger("hashx.task")
_started: dict[str, float] = {}


def _request_id_of(task: Any) -> str:
    request = getattr(task, "request", None)
    value = getattr(request, REQUEST_ID_HEADER, None)
    if not value:
        value = (getattr(request, "headers", None) or {}).get(REQUEST_ID_HEADER)
    return str(value or "")


@celery_signals.setup_logging.connect
def _use_django_logging(**kwargs: Any) -> None:
    """Connected, so Celery leaves logging as Django's LOGGING set it (JSON or text)."""


@celery_signals.task_prerun.connect
def _task_started(task_id: str, task: Any, **kwargs: Any) -> None:
    structlog.contextvars.clear_contextvars()
    request_id = _request_id_of(task)
    context = {"task": task.name, "task_id": task_id}
    if request_id:
        context["request_id"] = request_id
    structlog.contextvars.bind_contextvars(**context)
    _started[task_id] = time.perf_counter()


@celery_signals.task_postrun.connect
def _task_finished(task_id: str, task: Any, state: str | None = None, **kwargs: Any) -> None:
    started = _started.pop(task_id, None)
    duration_ms = round((time.perf_counter() - started) * 1000, 1) if started else None
    # Work a request started is worth a line; beat's periodic runs only at DEBUG.
    level = logging.INFO if _request_id_of(task) or state != "SUCCESS" else logging.DEBUG
    task_log.log(level, "task", state=state, duration_ms=duration_ms)
    structlog.contextvars.clear_contextvars()
