"""A request that needs a body and came without one is a 400 problem that says so: on every
operation the OpenAPI document gives a request body, and a publish in any content type (it was a
401 asking for a Content-Digest that an empty body cannot have)."""

import ast

import pytest
from drf_spectacular.generators import SchemaGenerator

from signals.actions.sets import do_create_set
from signals.actions.subscriptions import do_create_subscription
from signals.models import Batch
from tests.conftest import REPO_ROOT
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db

SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
TAKE_A_BODY = sorted(
    (method.upper(), path)
    for path, operations in SCHEMA["paths"].items()
    for method, operation in operations.items()
    if "requestBody" in operation
)


@pytest.fixture
def concrete(publisher, subscriber):
    """Path parameters naming the publisher's own things, so every check before the body's
    passes."""
    hash_set = do_create_set(publisher.org, {"slug": "acme-csam", "name": "Acme CSAM hashes"})
    subscription = do_create_subscription(
        publisher.org, url="https://hooks.example/x", sets=[hash_set], signal_types=[], labels=[]
    )
    return {
        "{slug}": hash_set.slug,
        "{org_slug}": subscriber.org.slug,
        "{key_id}": publisher.key.key_id,
        "{subscription_id}": str(subscription.pk),
    }


def test_the_document_gives_a_body_to_every_operation_that_changes_something():
    assert len(TAKE_A_BODY) >= 12, TAKE_A_BODY
    assert ("POST", "/api/v1/sets/{slug}/signals") in TAKE_A_BODY


@pytest.mark.parametrize(("method", "template"), TAKE_A_BODY)
def test_an_empty_body_is_a_400_problem_saying_so(publisher, concrete, method, template):
    path = template
    for name, value in concrete.items():
        path = path.replace(name, value)
    problem = assert_problem(publisher.api.request(method, path, body=b""), 400, "empty-body")
    assert "empty" in problem["detail"] and path in problem["detail"]


@pytest.mark.parametrize("body", [b" ", b"\r\n\t \n"])
def test_a_blank_json_body_is_empty_too(publisher, concrete, body):
    response = publisher.api.post("/api/v1/sets", body=body)
    assert_problem(response, 400, "empty-body")


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-ndjson", "text/csv", "text/plain"]
)
def test_an_empty_publish_is_a_400_in_every_content_type(publisher, concrete, content_type):
    path = "/api/v1/sets/acme-csam/signals"
    for query in ("", "?atomic=true"):
        headers = publisher.api.signed_headers("POST", path + query, None)
        response = publisher.api.client.generic(
            "POST", path + query, data=b"", content_type=content_type, headers=headers
        )
        problem = assert_problem(response, 400, "empty-body")
        assert "empty" in problem["detail"]
    assert not Batch.objects.exists()


def test_no_view_reads_request_data_but_through_body_of():
    """``request.data`` reads an empty body as ``{}``: views ask ``exchange.bodies.body_of``."""
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
        for path in sorted(REPO_ROOT.glob("*/api/*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "data"
        if isinstance(node.value, ast.Name) and node.value.id == "request"
    ]
    assert offenders == []
