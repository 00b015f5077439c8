"""The exchange builds the RFC 9421 signature base of a plain hashx signature itself (the
library's general machinery cost three times the Ed25519 check): the very bytes the library
signs, for any method, path, query and body a client may send, so it decides as the library
does; a signature out of the ordinary is left to the library."""

import secrets
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from cryptography.exceptions import InvalidSignature as BadEd25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.test import RequestFactory
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from hashx.auth import sign_headers
from hashx.keys import key_id_of
from members import auth
from tests.helpers import assert_problem

WHOAMI = "/api/v1/whoami"
# Characters a client may put in a path or query, legal or not, encoded or not.
SPELLINGS = st.text(alphabet=st.sampled_from("aZ09-._~!$&'()*+,;=:@/?%é []#|\"{}^`\\"), max_size=24)


def library_verifies(request, signature, public) -> bool:
    """The verdict of the library, as the exchange used to ask for it."""
    key_id = signature.params["keyid"]
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519, key_resolver=auth._OneKey(key_id, public)
    )
    try:
        verifier.verify(
            auth._message(request, signature.components), max_age=None, expect_tag="hashx"
        )
    except (InvalidSignature, HTTPMessageSignaturesException):
        return False
    return True


def plain_verifies(base, signature, public) -> bool:
    try:
        public.verify(signature.value, base)
    except BadEd25519:
        return False
    return True


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    path=SPELLINGS,
    query=SPELLINGS,
    body=st.binary(max_size=16),
    encode=st.booleans(),
    key_id=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1),
    nonce=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1),
)
def test_it_decides_as_the_library_for_any_path_query_and_body(
    method, path, query, body, encode, key_id, nonce
):
    key = Ed25519PrivateKey.generate()
    target = "/api/" + (quote(path, safe="/") if encode else path)
    if query:
        target += "?" + (quote(query, safe="=&") if encode else query)
    url = settings.HASHX_PUBLIC_URL + target
    try:
        signed = sign_headers(key, method, url, body or None, key_id=key_id, nonce=nonce)
    except HTTPMessageSignaturesException:
        return  # not a URL the client signs
    request = RequestFactory().generic(method, target, data=body, headers=signed)
    signature = auth._select(request)
    assert signature is not None
    base = auth._plain_signature_base(request, signature)
    if base is not None:
        public = key.public_key()
        assert plain_verifies(base, signature, public) == library_verifies(
            request, signature, public
        )


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("GET", "/api/v1/changes?sets=acme-csam,acme-urls&limit=100&cursor=MTIzLjQ1", b""),
        ("POST", "/api/v1/sets/acme-csam/signals?atomic=true", b'{"signals": []}'),
        ("GET", "/api/v1/sets/a%C3%A9b/snapshot", b""),
        ("DELETE", "/api/v1/subscriptions/7f3c-aa", b""),
    ],
)
def test_a_hashx_clients_signature_has_its_base_built_here_and_verifies(method, target, body):
    key = Ed25519PrivateKey.generate()
    signed = sign_headers(key, method, settings.HASHX_PUBLIC_URL + target, body or None)
    request = RequestFactory().generic(method, target, data=body, headers=signed)
    signature = auth._select(request)
    assert signature is not None
    base = auth._plain_signature_base(request, signature)
    assert base is not None
    assert plain_verifies(base, signature, key.public_key())
    tampered = RequestFactory().generic(method, target + "x", data=body, headers=signed)
    assert not plain_verifies(
        auth._plain_signature_base(tampered, signature), signature, key.public_key()
    )


def test_the_library_is_not_asked_about_a_hashx_clients_requests(publisher, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the library verified a plain hashx signature")

    monkeypatch.setattr(auth.HTTPMessageVerifier, "verify", refuse)
    assert publisher.api.get(WHOAMI).status_code == 200
    match = {"signals": [{"type": "md5", "value": "a" * 32}]}
    assert publisher.api.post("/api/v1/match", match).status_code == 200


@dataclass
class _Message:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def signed_over(key, method, url, covered):
    """Headers of a signature over ``covered``, tagged hashx, as another RFC 9421 client might
    make them."""
    key_id = key_id_of(key)
    message = _Message(method, url)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: key}),
    )
    signer.sign(
        message,
        key_id=key_id,
        nonce=secrets.token_urlsafe(18),
        label="hashx",
        tag="hashx",
        covered_component_ids=covered,
    )
    return message.headers


@pytest.mark.parametrize(
    "covered",
    [
        ["@method", "@target-uri", "@authority"],
        ["@method", "@target-uri", "@path", "@query"],
    ],
)
def test_a_signature_over_other_components_is_verified_by_the_library(publisher, covered):
    url = settings.HASHX_PUBLIC_URL + WHOAMI + "?x=1"
    headers = signed_over(publisher.private_key, "GET", url, covered)
    response = publisher.api.get(WHOAMI + "?x=1", headers=headers, sign=False)
    assert response.status_code == 200, response.content
    headers = signed_over(publisher.private_key, "GET", url, covered)
    response = publisher.api.get(WHOAMI + "?x=2", headers=headers, sign=False)
    assert_problem(response, 401, "signature-invalid")


def test_labels_that_differ_between_the_two_fields_are_still_refused(publisher):
    valid = publisher.api.signed_headers("GET", WHOAMI, None)
    headers = {
        "Signature-Input": valid["Signature-Input"] + ', proxy=("@method");keyid="x";tag="cdn"',
        "Signature": f"{valid['Signature']}, other=:AAAA:",
    }
    assert_problem(publisher.api.get(WHOAMI, headers=headers, sign=False), 401, "signature-invalid")


def test_a_tampered_plain_signature_names_the_url_it_was_checked_against(publisher):
    signed = publisher.api.signed_headers("GET", WHOAMI + "?sets=a", None)
    response = publisher.api.get(WHOAMI + "?sets=b", headers=signed, sign=False)
    assert_problem(response, 401, "signature-invalid")
    assert response.json()["verified_target_uri"] == settings.HASHX_PUBLIC_URL + WHOAMI + "?sets=b"
