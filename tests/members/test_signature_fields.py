"""The exchange reads the Signature-Input and Signature fields a hashx client writes by pattern
(http_sf's general parser cost as much as the Ed25519 check): for any field value, what it reads
is what http_sf reads, and whatever it does not recognise is left to http_sf."""

import http_sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from hashx.auth import sign_headers
from members.auth import plain_dictionary

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
# Pieces fields are made of, to splice into real ones.
PIECES = st.sampled_from(
    ['"', "\\", ";", "=", ",", " ", "(", ")", ":", "*", "-1", "0", "1" * 16, "?1", "a=b", "=="]
)


def http_sf_reads(value: str):
    try:
        return http_sf.parse(value.encode(), tltype="dictionary")
    except Exception:
        return None


def assert_same(name: str, value: str) -> None:
    plain = plain_dictionary(name, value)
    if plain is not None:
        assert plain == http_sf_reads(value), (name, value)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST"]),
    body=st.binary(max_size=8),
    key_id=PRINTABLE,
    nonce=PRINTABLE,
    created=st.integers(min_value=0, max_value=10**16),
    cut=st.integers(min_value=0, max_value=200),
    piece=PIECES,
)
def test_what_it_reads_is_what_http_sf_reads(method, body, key_id, nonce, created, cut, piece):
    try:
        signed = sign_headers(
            KEY, method, "http://127.0.0.1:8000/api/v1/x", body or None,
            key_id=key_id or "k", nonce=nonce or "n", created=created,
        )  # fmt: skip
    except Exception:
        return  # not a signature the library makes
    for name in ("Signature-Input", "Signature"):
        value = signed[name]
        assert_same(name, value)
        assert_same(name, value[:cut] + piece + value[cut:])  # spliced
        assert_same(name, value[:cut])  # cut short


def test_a_hashx_clients_fields_are_read_by_pattern():
    signed = sign_headers(KEY, "POST", "http://127.0.0.1:8000/api/v1/x", b"{}", nonce="n-1")
    for name in ("Signature-Input", "Signature"):
        assert plain_dictionary(name, signed[name]) == http_sf_reads(signed[name])
        assert plain_dictionary(name, signed[name]) is not None


def test_what_it_does_not_recognise_is_left_to_http_sf():
    for name, value in [
        ("Signature-Input", 'a=("@method");tag="hashx", b=("@method")'),  # two members
        ("Signature-Input", 'a=("@method");tag="has\\"hx"'),  # an escape
        ("Signature-Input", 'a=("@method");flag'),  # a boolean parameter
        ("Signature-Input", ' a=("@method")'),  # space before
        ("Signature", "a=:AAE:"),  # bad padding
        ("Signature", "a=:AAEC:;x=1"),  # a parameter
    ]:
        assert plain_dictionary(name, value) is None, value
