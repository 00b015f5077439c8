"""The client builds the signature of a plain request itself (the library's general machinery
cost eight times the Ed25519 signature): the very headers the library makes, for any method,
path, query, body, key id and nonce a caller may give; anything out of the ordinary is signed by
the library. Ed25519 signatures are deterministic, so the headers compare byte for byte."""

from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from hashx import auth

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
LIBRARY = auth._library_signature
# Characters a caller may put in a path or query, legal or not, encoded or not.
SPELLINGS = st.text(alphabet=st.sampled_from("aZ09-._~!$&'()*+,;=:@/?%é []#|\"{}^`\\"), max_size=24)
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def library(method, url, body, key_id, nonce, created, digest=None):
    if body and digest is None:
        digest = auth.hashlib.sha256(body).digest()
    return LIBRARY(KEY, method.upper(), url, key_id, nonce, created, digest, None)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "post", "PUT", "PATCH", "DELETE", "OPTIONS", "M-SEARCH"]),
    origin=st.sampled_from(
        ["http://127.0.0.1:8000", "https://hashx.example.org", "http://[::1]:80"]
    ),
    path=SPELLINGS,
    query=SPELLINGS,
    body=st.binary(max_size=16),
    encode=st.booleans(),
    key_id=PRINTABLE,
    nonce=PRINTABLE,
    created=st.integers(min_value=0, max_value=2**33),
)
def test_every_signature_is_the_one_the_library_makes(
    method, origin, path, query, body, encode, key_id, nonce, created
):
    url = origin + "/api/" + (quote(path, safe="/") if encode else path)
    if query:
        url += "?" + (quote(query, safe="=&") if encode else query)
    key_id, nonce = key_id or "k", nonce or "n"
    try:
        expected = library(method, url, body, key_id, nonce, created)
    except HTTPMessageSignaturesException:
        expected = None  # not a request the library signs
    try:
        made = auth.sign_headers(
            KEY, method, url, body or None, key_id=key_id, nonce=nonce, created=created
        )
    except HTTPMessageSignaturesException:
        made = None
    assert made == expected


def test_a_plain_request_is_signed_without_the_library(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the library signed a plain request")

    monkeypatch.setattr(auth, "_library_signature", refuse)
    url = "https://hashx.example.org/api/v1/sets/acme-csam/signals?atomic=true"
    made = auth.sign_headers(KEY, "POST", url, b'{"signals": []}', nonce="n1", created=1700000000)
    assert made == library("POST", url, b'{"signals": []}', auth.key_id_of(KEY), "n1", 1700000000)
    digest = auth.hashlib.sha256(b"streamed").digest()
    made = auth.sign_headers(KEY, "POST", url, digest=digest, nonce="n2", created=1700000001)
    assert made == library("POST", url, None, auth.key_id_of(KEY), "n2", 1700000001, digest)


def test_a_request_out_of_the_ordinary_is_signed_by_the_library(monkeypatch):
    called = []
    real = auth._library_signature
    monkeypatch.setattr(auth, "_library_signature", lambda *a: called.append(a) or real(*a))
    auth.sign_headers(KEY, "GET", "http://[::1]:8000/api/v1/whoami", nonce="n", created=1)
    auth.sign_headers(KEY, "GET", "http://127.0.0.1/api/v1/whoami", nonce='a "quoted" one')
    assert len(called) == 2
