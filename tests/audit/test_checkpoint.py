"""Checkpoints are signed by the exchange key that /.well-known/hashx publishes."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.actions import record
from audit.actions.checkpoint import do_sign_checkpoint
from audit.actions.seal import chain_head
from audit.models import AuditCheckpoint, AuditSeal
from hashx.keys import b64url_decode

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_checkpoint_verifies_with_the_published_key(publisher, sealed):
    for n in range(3):
        record("test.event", actor_org=publisher.org, details={"n": n})
    sealed()
    do_sign_checkpoint()

    cp = publisher.api.get("/api/v1/audit/checkpoint").json()
    assert cp["tree_size"] == AuditSeal.objects.count() >= 3
    assert cp["alg"] == "EdDSA"
    jwks = publisher.api.get("/.well-known/hashx").json()["jwks"]["keys"]
    jwk = next(k for k in jwks if k["kid"] == cp["kid"])
    signed = {k: cp[k] for k in ("exchange_id", "tree_size", "head_hash", "issued_at", "kid")}
    message = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"])).verify(
        b64url_decode(cp["signature"]), message
    )


def test_beat_signs_only_when_the_chain_grew(publisher, sealed):
    record("test.event", actor_org=publisher.org)
    sealed()
    first = do_sign_checkpoint(only_if_changed=True)
    assert first is not None
    assert do_sign_checkpoint(only_if_changed=True) is None
    record("test.event", actor_org=publisher.org)
    sealed()
    assert do_sign_checkpoint(only_if_changed=True).tree_size == first.tree_size + 1
    assert AuditCheckpoint.objects.count() == 2


def test_the_first_request_gets_a_checkpoint_even_before_beat_signed_one(publisher):
    assert not AuditCheckpoint.objects.exists()
    body = publisher.api.get("/api/v1/audit/checkpoint").json()
    head_seq, head_hash = chain_head()
    assert (body["tree_size"], body["head_hash"]) == (head_seq, head_hash)


def test_checkpoint_needs_a_member(api):
    response = api.get("/api/v1/audit/checkpoint")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
