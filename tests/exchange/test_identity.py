"""The exchange's own identity: created once, published as a JWKS, usable to sign."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.core.exceptions import ImproperlyConfigured

from exchange.actions.identity import do_ensure_identity, get_signing_key
from exchange.models import ExchangeIdentity, ExchangeKey
from hashx.keys import b64url_decode, jwk_thumbprint, private_key_to_pem, raw_public_bytes

pytestmark = pytest.mark.django_db


def test_the_thumbprint_matches_the_rfc_8037_example():
    # RFC 8037 appendix A.3: the JWK thumbprint of the appendix A.2 Ed25519 public key.
    public = b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
    assert jwk_thumbprint(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_identity_is_created_once(api):
    first = do_ensure_identity()
    second = do_ensure_identity()
    assert first.exchange_id == second.exchange_id
    assert ExchangeIdentity.objects.count() == 1
    assert ExchangeKey.objects.filter(current=True).count() == 1


def test_well_known_publishes_the_key_that_signs(api):
    body = api.get("/.well-known/hashx").json()
    assert body["exchange_id"].startswith("hx-")
    assert body["api_version"] == "v1"
    assert body["api_root"].endswith("/api/v1/")
    assert [t["name"] for t in body["signal_types"]][:3] == ["pdq", "md5", "sha1"]
    assert body["signal_types"][0]["comparison"] == "hamming"
    (jwk,) = body["jwks"]["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
    public = b64url_decode(jwk["x"])
    assert jwk["kid"] == jwk_thumbprint(public)

    kid, private = get_signing_key()
    assert kid == jwk["kid"]
    signature = private.sign(b"checkpoint")
    Ed25519PublicKey.from_public_bytes(public).verify(signature, b"checkpoint")


def test_a_key_file_replaces_the_generated_key_and_the_old_one_stays_published(
    api, settings, tmp_path
):
    old_kid, _ = get_signing_key()
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "exchange.pem"
    path.write_text(private_key_to_pem(key))
    settings.HASHX_EXCHANGE_KEY_FILE = str(path)

    do_ensure_identity()

    kid, private = get_signing_key()
    assert kid == jwk_thumbprint(raw_public_bytes(key.public_key()))
    assert private.sign(b"x") == key.sign(b"x")
    assert ExchangeKey.objects.get(kid=kid).private_key_pem == ""
    kids = [k["kid"] for k in api.get("/.well-known/hashx").json()["jwks"]["keys"]]
    assert kids == [kid, old_kid]


def test_an_unreadable_key_file_is_refused_by_name(settings, tmp_path):
    path = tmp_path / "not-a-key.pem"
    path.write_text("hello")
    settings.HASHX_EXCHANGE_KEY_FILE = str(path)
    with pytest.raises(ImproperlyConfigured, match="HASHX_EXCHANGE_KEY_FILE"):
        do_ensure_identity()
