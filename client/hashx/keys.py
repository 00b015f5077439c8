"""Ed25519 keys: generation, files, JWK form, RFC 7638 thumbprints (key ids), and parsing a
public key pasted as PEM, raw base64 or JWK. Shared by the client and the server."""

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFormatError(ValueError):
    """The text is not an Ed25519 key in any accepted form; the message says why."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def jwk_thumbprint(public_raw: bytes) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(public_raw)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def key_id_of(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return jwk_thumbprint(raw_public_bytes(public))


def public_jwk(public_raw: bytes) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(public_raw),
        "kid": jwk_thumbprint(public_raw),
        "alg": "EdDSA",
        "use": "sig",
    }


def public_pem(public_raw: bytes) -> str:
    key = Ed25519PublicKey.from_public_bytes(public_raw)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def private_key_to_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def load_private_key_pem(pem: bytes) -> Ed25519PrivateKey:
    """Load an unencrypted PKCS#8 PEM private key; ValueError unless it is Ed25519."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (TypeError, UnsupportedAlgorithm) as exc:  # encrypted, or a type cryptography lacks
        raise ValueError(
            f"an encrypted or unsupported key ({exc}); use an unencrypted PKCS#8 key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    return load_private_key_pem(Path(path).read_bytes())


def write_private_key(path: str | os.PathLike[str], key: Ed25519PrivateKey) -> None:
    """Write a PEM private key readable by its owner only (mode 0600), refusing to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(private_key_to_pem(key))


def parse_public_key(text: str) -> bytes:
    """Raw 32-byte Ed25519 public key from PEM (SubjectPublicKeyInfo), a JWK (JSON with
    kty OKP, crv Ed25519) or the raw key in base64 / base64url."""
    text = text.strip()
    if not text:
        raise KeyFormatError("no key given")
    if text.startswith("-----BEGIN"):
        if "PRIVATE KEY" in text:
            raise KeyFormatError("this is a private key: paste the public key only")
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise KeyFormatError(f"not a readable PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError(
                "the PEM holds a public key of another type: only Ed25519 is accepted"
            )
        return raw_public_bytes(key)
    if text.startswith("{"):
        try:
            jwk = json.loads(text)
        except (ValueError, RecursionError):  # nested too deep is no JWK either
            raise KeyFormatError("not valid JSON for a JWK") from None
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise KeyFormatError('a JWK must have "kty": "OKP" and "crv": "Ed25519"')
        if "d" in jwk:
            raise KeyFormatError('this JWK holds a private key ("d"): paste the public key only')
        text = str(jwk.get("x", ""))
    try:
        raw = b64url_decode(text.replace("+", "-").replace("/", "_").rstrip("="))
    except (binascii.Error, ValueError):
        raise KeyFormatError("not PEM, JWK or base64") from None
    if len(raw) != 32:
        raise KeyFormatError(f"an Ed25519 public key is 32 bytes; this one is {len(raw)}")
    return raw


def possession_statement(challenge: str, organisation: str, key_id: str) -> bytes:
    """What a new key signs to prove its holder has it: bound to the exchange's one-time
    challenge, the organisation adding the key and the key itself."""
    lines = [
        "hashx key possession",
        f"challenge={challenge}",
        f"organisation={organisation}",
        f"key_id={key_id}",
    ]
    return "\n".join(lines).encode()
