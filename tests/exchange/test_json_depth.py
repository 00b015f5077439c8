"""JSON nested too deep is a 400 problem, never a RecursionError: every body the API parses is
measured before a parser sees it (exchange.bodies), and so is each line of an NDJSON upload,
where a deep line is one rejected line and the rest of the upload is kept."""

import json

import pytest

from exchange.bodies import MAX_DEPTH, TooDeep, check_nesting
from signals.actions.sets import do_create_set
from signals.models import Batch
from tests.helpers import assert_problem
from tests.signals.conftest import PDQ, pdq

pytestmark = pytest.mark.django_db


@pytest.fixture
def csam_set(publisher):
    return do_create_set(publisher.org, {"slug": "acme-csam", "name": "Acme CSAM hashes"})


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def objects_and_arrays(depth: int) -> bytes:
    """``{"a": [{"a": [ … ]}]}``: objects and arrays in turn, ``depth`` in all."""
    text = "0"
    for level in range(depth):
        text = f'{{"a": {text}}}' if level % 2 else f"[{text}]"
    return text.encode()


@pytest.mark.parametrize("nest", [arrays, objects_and_arrays])
def test_the_check_counts_nesting_exactly(nest):
    check_nesting(nest(MAX_DEPTH))
    with pytest.raises(TooDeep):
        check_nesting(nest(MAX_DEPTH + 1))
    assert json.loads(nest(MAX_DEPTH))  # what it measured is JSON


def test_brackets_inside_strings_are_text_not_nesting():
    deep_text = json.dumps({"a": "[{" * 5000 + '\\"]' * 10}).encode()
    check_nesting(deep_text)
    check_nesting(b'["\\\\", ' + arrays(MAX_DEPTH - 1) + b"]")


def test_brackets_that_never_close_are_refused_before_a_parser_recurses_into_them():
    with pytest.raises(ValueError):
        check_nesting(b"[" * 40 + b"]" * 41 + b"[" * 30)
    with pytest.raises(ValueError):
        check_nesting(b"[" * 50 + b"]" * 10 + b"[" * 20)
    with pytest.raises(ValueError):
        check_nesting(b"[" * 100_000)
    with pytest.raises(ValueError):
        check_nesting(b'["' + b"[" * 100_000)  # an unclosed string swallows the rest


DEEP = arrays(100_000)


def deep_item(depth: int) -> dict:
    item: object = "x"
    for _ in range(depth):
        item = [item]
    return {"type": "pdq", "value": PDQ[0], "labels": item}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/sets"),
        ("PATCH", "/api/v1/sets/acme-csam"),
        ("PUT", "/api/v1/sets/acme-csam/grants/globex-social"),
        ("POST", "/api/v1/sets/acme-csam/signals"),
        ("POST", "/api/v1/sets/acme-csam/retractions"),
        ("POST", "/api/v1/sets/acme-csam/opinions"),
        ("POST", "/api/v1/match"),
        ("POST", "/api/v1/subscriptions"),
        ("POST", "/api/v1/keys"),
    ],
)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(DEEP, id="deep"),
        pytest.param(arrays(1500), id="1500"),
        pytest.param(b'{"signals": [' + objects_and_arrays(1500) + b"]}", id="deep-item"),
        pytest.param(json.dumps({"signals": [deep_item(MAX_DEPTH)]}).encode(), id="just-over"),
        pytest.param(b"[" * 100_000, id="unclosed"),
    ],
)
def test_a_deep_body_is_a_400_problem_on_every_endpoint(
    publisher, subscriber, csam_set, method, path, body
):
    response = publisher.api.request(method, path, body=body)
    problem = assert_problem(response, 400, "malformed-request")
    assert "nested deeper than 64" in problem["detail"] or "pair up" in problem["detail"]
    assert len(response.content) < 2000
    assert not Batch.objects.exists()


def test_a_body_nested_as_deep_as_allowed_is_read(publisher, csam_set):
    response = publisher.api.post(
        "/api/v1/sets/acme-csam/signals", {"signals": [deep_item(MAX_DEPTH - 3)]}
    )
    assert response.status_code == 202, response.content
    assert "bad label" in response.json()["rejections"][0]["reason"]  # read, refused by field


def test_a_deep_ndjson_line_is_one_rejected_line_and_the_others_are_kept(publisher, csam_set):
    lines = [
        json.dumps(pdq(0)).encode(),
        arrays(100_000)[:60_000],  # under the 64 KiB line limit, unclosed
        json.dumps(pdq(2)).encode()[:-1] + b', "labels": ' + arrays(1500) + b"}",
        json.dumps(deep_item(MAX_DEPTH)).encode(),
        json.dumps(pdq(1)).encode(),
    ]
    body = b"\n".join(lines) + b"\n"
    path = "/api/v1/sets/acme-csam/signals"
    headers = publisher.api.signed_headers("POST", path, body)
    response = publisher.api.client.generic(
        "POST", path, data=body, content_type="application/x-ndjson", headers=headers
    )
    assert response.status_code == 202, response.content
    answer = response.json()
    assert (answer["received"], answer["accepted"], answer["rejected"]) == (5, 2, 3)
    assert answer["rejections"] == [
        {"line": 2, "reason": "nested deeper than 64 levels"},  # before it is seen unclosed
        {"line": 3, "reason": "nested deeper than 64 levels"},
        {"line": 4, "reason": "nested deeper than 64 levels"},
    ]


def test_a_jwk_given_as_a_deep_json_string_is_a_400_problem(publisher):
    """A string the exchange parses as JSON itself (a JWK pasted as text) is request input too."""
    jwk = '{"kty": "OKP", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    body = {"public_key": jwk, "challenge": "c" * 32, "proof": "p" * 86}
    assert_problem(publisher.api.post("/api/v1/keys", body), 400, "validation")
