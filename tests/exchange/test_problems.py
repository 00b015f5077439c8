"""Every API error is an RFC 9457 problem document, never an HTML page or a 500."""

import json

import pytest
from rest_framework.test import APIClient

from exchange.problems import field_errors
from tests.helpers import assert_problem

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.exchange.urls")]


def test_an_unknown_api_path_is_a_problem_404(api):
    body = assert_problem(api.get("/api/v1/no-such-thing"), 404, "not-found")
    assert "/api/v1/no-such-thing" in body["detail"]
    assert_problem(api.post("/api/v2/anything", {}, format="json"), 404, "not-found")


def test_a_write_to_an_unknown_api_path_is_a_problem_404_not_a_csrf_page():
    """Django's CSRF check runs before the catch-all; a real client sends no CSRF token."""
    browserless = APIClient(enforce_csrf_checks=True)
    for method in ("post", "put", "patch", "delete"):
        response = getattr(browserless, method)("/api/v1/sets/%3A/signals", {}, format="json")
        assert_problem(response, 404, "not-found")


def test_a_wrong_method_is_a_problem_405(api):
    assert_problem(api.post("/healthz"), 405, "method-not-allowed")


def test_malformed_json_is_a_problem_400(api):
    response = api.post("/api/v1/test-echo", data=b'{"name": ', content_type="application/json")
    assert_problem(response, 400, "malformed-request")


def test_an_unsupported_media_type_is_a_problem_415(api):
    response = api.post(
        "/api/v1/test-echo", data=b"name=x", content_type="application/x-www-form-urlencoded"
    )
    assert_problem(response, 415, "unsupported-media-type")


def test_an_oversized_body_is_a_problem_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    payload = json.dumps({"name": "x" * 2048, "items": []})
    body = assert_problem(
        api.post("/api/v1/test-echo", data=payload, content_type="application/json"),
        413,
        "payload-too-large",
    )
    assert "1024" in body["detail"]


def test_validation_lists_every_field_error_with_its_path(api):
    payload = {"items": [{"value": "ok"}, {"value": "far-too-long"}, {}]}
    body = assert_problem(api.post("/api/v1/test-echo", payload, format="json"), 400, "validation")
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"name", "items.1.value", "items.2.value"}


def test_valid_input_passes_through(api):
    response = api.post(
        "/api/v1/test-echo", {"name": "n", "items": [{"value": "v"}]}, format="json"
    )
    assert response.status_code == 200


def test_problem_types_are_documented(api):
    body = api.get("/problems/not-ready").json()
    assert (body["status"], body["title"]) == (503, "The exchange is not ready")
    assert_problem(api.get("/problems/nonsense"), 404, "not-found")
    assert_problem(api.get("/problems/%3A"), 404, "not-found")


def test_nested_errors_flatten_to_dotted_paths():
    detail = {"signals": [{}, {"value": ["bad hex"]}], "non_field_errors": ["atomic refused"]}
    assert field_errors(detail) == [
        {"field": "signals.1.value", "message": "bad hex"},
        {"field": "", "message": "atomic refused"},
    ]


def test_the_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert {"/healthz", "/readyz", "/.well-known/hashx"} <= set(paths)
    docs = api.get("/api/v1/docs")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
