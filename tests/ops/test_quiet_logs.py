"""Quiet by default: what happens every few seconds, or is expected, is not news."""

import logging

import pytest

pytestmark = pytest.mark.django_db


def test_a_readiness_503_is_logged_at_debug_and_never_as_an_error(api, caplog):
    caplog.set_level(logging.DEBUG)
    answer = api.get("/readyz")  # no worker runs beside this test: not ready
    assert answer.status_code == 503
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    (line,) = [r for r in caplog.records if r.name == "hashx.request"]
    assert line.levelno == logging.DEBUG


def test_a_request_logs_one_line_with_its_id_at_info(api, caplog):
    caplog.set_level(logging.DEBUG)
    api.get("/api/v1/whoami", HTTP_X_REQUEST_ID="quiet-1")
    lines = [r for r in caplog.records if r.name == "hashx.request"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "quiet-1" in caplog.text


def test_beat_sends_without_a_line_per_task(settings):
    assert settings.LOGGING["loggers"]["celery.beat"]["level"] == "WARNING"
    assert logging.getLogger("celery.beat").getEffectiveLevel() == logging.WARNING
