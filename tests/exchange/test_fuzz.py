"""Every operation of the OpenAPI document, fed what schemathesis generates from it and signed
by a member, over real HTTP: never a 5xx, and every error a problem document. Half the examples
name a real set and organisation in their path, so the checks behind the 404s run too.
Derandomised: the same examples on every run."""

import zlib

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from exchange.problems import PROBLEM_CONTENT_TYPE
from hashx.auth import HashxAuth
from signals.actions.sets import do_create_set, do_grant

pytestmark = pytest.mark.django_db(transaction=True)


@schemathesis.serializer("application/x-ndjson")
def ndjson(context: object, value: object) -> bytes:
    """The document types an upload as a string: sent as it is (a lone surrogate becomes bytes
    that are not UTF-8, which the exchange must reject by line)."""
    return str(value).encode("utf-8", "surrogatepass")


@pytest.fixture
def fuzz_set(publisher, subscriber):
    hash_set = do_create_set(publisher.org, {"slug": "acme-fuzz", "name": "Fuzz"})
    do_grant(hash_set, subscriber.org, can_read=True, can_publish=True)
    return hash_set


# The document /api/v1/schema serves, made without a server (pytest-django set Django up).
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))


# /readyz answers 503 by design while no worker has reported in, and none runs here.
@schema.exclude(path_regex="^/readyz$").parametrize()
@settings(max_examples=15, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error_or_an_error_that_is_not_a_problem(
    case, exchange_url, publisher, subscriber, fuzz_set
):
    params = case.path_parameters or {}
    if zlib.crc32(repr(sorted(params.items())).encode()) % 2:
        params.update(
            {k: v for k, v in (("slug", fuzz_set.slug), ("org_slug", subscriber.org.slug))
             if k in params}
        )  # fmt: skip
    response = case.call(base_url=exchange_url, auth=HashxAuth(publisher.private_key))
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type == PROBLEM_CONTENT_TYPE, (
            case.method, response.request.url, response.status_code, response.text[:200]
        )  # fmt: skip
