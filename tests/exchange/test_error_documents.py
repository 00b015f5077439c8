"""Every error the exchange answers is a problem document with a bounded detail, also when it
is refused before a view runs (a Host it does not serve, a page that does not exist, a failed
CSRF check, an error answer a view built itself) and when the detail quotes request input.
What gunicorn refuses before Django is tried on a real gunicorn in test_serving.py."""

import pytest
from django.test import Client

from exchange.problems import MAX_DETAIL_CHARS
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

LONG = "k" * 5000


def assert_bounded(body):
    """The detail quotes no more than a short piece of the long input."""
    assert len(body["detail"]) <= MAX_DETAIL_CHARS, body
    assert "k" * 100 not in body["detail"], body


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/sets", "/admin/login/", "/nowhere"])
def test_a_host_the_exchange_does_not_serve_is_a_problem_400(client, path):
    body = assert_problem(client.get(path, HTTP_HOST="evil.example"), 400, "bad-request")
    assert "evil.example" not in body["detail"]


@pytest.mark.parametrize("path", ["/nowhere", "/static/nothing.css", "/" + LONG])
def test_a_page_that_does_not_exist_is_a_problem_404_wherever_it_is(client, path):
    assert_bounded(assert_problem(client.get(path), 404, "not-found"))


def test_an_unknown_api_path_is_quoted_cut_short(client):
    assert_bounded(assert_problem(client.get(f"/api/v1/{LONG}"), 404, "not-found"))


def test_a_form_post_without_its_csrf_token_is_a_problem_403():
    browser = Client(enforce_csrf_checks=True)
    response = browser.post("/admin/login/", {"username": "a", "password": "b"})
    body = assert_problem(response, 403, "forbidden")
    assert "CSRF" in body["detail"]


def test_an_error_answer_a_view_builds_itself_becomes_a_problem_document(staff):
    # The admin's logout takes POST only: Django answers a GET with an empty 405 of its own.
    response = staff.get("/admin/logout/")
    assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response["Allow"]


def test_a_nul_outside_the_api_is_a_problem_400(staff):
    body = assert_problem(staff.get("/admin/?q=%00"), 400, "bad-request")
    assert "NUL" in body["detail"]


def test_a_key_id_of_any_length_is_quoted_cut_short(api, publisher):
    headers = publisher.api.signed_headers("GET", "/api/v1/sets", None, key_id=LONG)
    body = assert_problem(api.get("/api/v1/sets", headers=headers), 401, "key-unknown")
    assert_bounded(body)
    assert LONG[:40] in body["detail"]


def test_an_algorithm_of_any_length_is_quoted_cut_short(api, publisher):
    headers = publisher.api.signed_headers("GET", "/api/v1/sets", None)
    headers["Signature-Input"] = headers["Signature-Input"].replace(
        'alg="ed25519"', f'alg="{LONG}"'
    )
    assert 'alg="' in headers["Signature-Input"]
    assert_bounded(
        assert_problem(api.get("/api/v1/sets", headers=headers), 401, "algorithm-unsupported")
    )


def test_a_slug_of_any_length_is_quoted_cut_short(publisher):
    assert_bounded(assert_problem(publisher.api.get(f"/api/v1/sets/{LONG}"), 404, "not-found"))
    assert_bounded(assert_problem(publisher.api.get(f"/problems/{LONG}"), 404, "not-found"))


def test_a_validation_message_that_quotes_the_input_is_cut_short(publisher):
    answer = publisher.api.post("/api/v1/sets", {"slug": "ok", "name": "Ok", "tlp": LONG})
    body = assert_problem(answer, 400, "validation")
    (error,) = body["errors"]
    assert len(error["message"]) <= MAX_DETAIL_CHARS
    assert error["message"].endswith("is not a valid choice.")  # the reason survives the cut
    assert len(body["detail"]) <= MAX_DETAIL_CHARS
