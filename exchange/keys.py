"""Ed25519 key helpers shared by the exchange identity, member keys and the client: JWK form
and the RFC 7638 thumbprint used as key id."""

import base64
import hashlib
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def jwk_thumbprint(public_raw: bytes) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(public_raw)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def public_jwk(public_raw: bytes) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(public_raw),
        "kid": jwk_thumbprint(public_raw),
        "alg": "EdDSA",
        "use": "sig",
    }


def private_key_to_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def load_private_key_pem(pem: bytes) -> Ed25519PrivateKey:
    """Load a PKCS#8 PEM private key; raises ValueError unless it is an unencrypted Ed25519 key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key
