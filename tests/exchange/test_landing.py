"""``/``: a small page saying what this exchange is and where its API, docs and admin are (JSON for
a client that asks for JSON); ``/problems/<type>``: what a problem type means, its usual cause,
the fix and a request that gets it right."""

import re

import pytest

from exchange.actions.identity import get_identity
from exchange.problem_docs import DOCS
from exchange.problems import PROBLEM_TYPES
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_the_landing_page_says_what_this_is_and_links_the_api_docs_schema_admin_and_identity(
    api, settings
):
    for accept in (BROWSER, "*/*", None):
        response = api.get("/", **({"HTTP_ACCEPT": accept} if accept else {}))
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert f"<h1>{settings.HASHX_EXCHANGE_NAME}</h1>" in page
    public = settings.HASHX_PUBLIC_URL
    for path in ("/api/v1/docs", "/api/v1/schema", "/admin/", "/.well-known/hashx"):
        assert f'href="{public}{path}"' in page
    assert get_identity().exchange_id in page
    assert not re.search(r"""(src|href)=["']https?://(?!127\.0\.0\.1|localhost|testserver)""", page)
    assert len(page) < 5000


def test_a_client_that_asks_for_json_gets_the_same_as_json(api, settings):
    response = api.get("/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    public = settings.HASHX_PUBLIC_URL
    assert body["name"] == settings.HASHX_EXCHANGE_NAME
    assert body["exchange_id"] == get_identity().exchange_id
    assert body["links"] == {
        "docs": f"{public}/api/v1/docs",
        "schema": f"{public}/api/v1/schema",
        "well_known": f"{public}/.well-known/hashx",
        "admin": f"{public}/admin/",
        "readyz": f"{public}/readyz",
    }
    assert api.get(body["links"]["well_known"].removeprefix(public)).status_code == 200


def test_other_methods_on_the_landing_page_are_problem_documents(api):
    assert_problem(api.post("/", HTTP_ACCEPT=BROWSER), 405, "method-not-allowed")


def test_every_problem_type_says_what_happened_the_cause_the_fix_and_an_example(api):
    missing = sorted(set(PROBLEM_TYPES) - set(DOCS))
    assert not missing, f"describe these problem types in exchange/problem_docs.py: {missing}"
    for slug, (status, title) in PROBLEM_TYPES.items():
        body = api.get(f"/problems/{slug}").json()
        assert (body["status"], body["title"]) == (status, title)
        assert body["type"].endswith(f"/problems/{slug}")
        for part in ("happened", "cause", "fix", "example"):
            assert len(body[part]) > 10, (slug, part)


def test_a_browser_following_a_problem_type_gets_a_page(api, settings):
    response = api.get("/problems/signature-invalid", HTTP_ACCEPT=BROWSER)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for heading in ("What happened", "The usual cause", "How to fix it", "A request that gets it"):
        assert heading in page
    assert "401 Bad signature" in page and "HASHX_PUBLIC_URL" in page
    assert f"HASHX_URL={settings.HASHX_PUBLIC_URL} hashx whoami" in page


def test_an_unknown_problem_type_is_a_problem_document_even_for_a_browser(api):
    assert_problem(api.get("/problems/nonsense", HTTP_ACCEPT=BROWSER), 404, "not-found")
