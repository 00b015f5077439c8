"""Standard Webhooks signatures, asymmetric flavour (``v1a``: Ed25519).

The exchange signs ``"{webhook-id}.{webhook-timestamp}.{body}"`` with its own key, the one
``/.well-known/hashx`` publishes, and sends ``webhook-signature: v1a,<base64 signature>``.
A receiver calls :func:`verify` with the raw body, the headers and the exchange's published
keys; it raises :class:`WebhookVerificationError` unless one signature verifies and the
timestamp is recent. Deduplicate on ``webhook-id``: a retried delivery carries the same one.
"""

import base64
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hashx.keys import parse_public_key

DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(Exception):
    pass


def signed_content(webhook_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{webhook_id}.{timestamp}.".encode() + body


def sign(key: Ed25519PrivateKey, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    signature = key.sign(signed_content(webhook_id, timestamp, body))
    return "v1a," + base64.b64encode(signature).decode()


def _public_keys(keys: Iterable[Any]) -> list[Ed25519PublicKey]:
    """Accepts Ed25519 public keys, JWKs (dicts) or anything ``parse_public_key`` reads."""
    parsed = []
    for key in keys:
        if isinstance(key, Ed25519PublicKey):
            parsed.append(key)
        else:
            text = json.dumps(key) if isinstance(key, dict) else str(key)
            parsed.append(Ed25519PublicKey.from_public_bytes(parse_public_key(text)))
    return parsed


def verify(
    body: bytes,
    headers: Mapping[str, str],
    keys: Iterable[Any],
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> str:
    """Check a delivery; returns its ``webhook-id``. ``keys``: the ``keys`` list of the
    exchange's ``/.well-known/hashx`` (JWKs), or Ed25519 public keys."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        webhook_id = lowered["webhook-id"]
        raw_timestamp = lowered["webhook-timestamp"]
        header = lowered["webhook-signature"]
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from None
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()):
        raise WebhookVerificationError("webhook-timestamp is not a whole number of seconds")
    timestamp = int(raw_timestamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {int(current - timestamp)} s away from now"
            f" (tolerance {tolerance} s): a replay or a wrong clock"
        )
    content = signed_content(webhook_id, timestamp, body)
    public_keys = _public_keys(keys)
    for candidate in header.split():
        version, _, encoded = candidate.partition(",")
        if version != "v1a":
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        for public_key in public_keys:
            try:
                public_key.verify(signature, content)
            except InvalidSignature:
                continue
            return webhook_id
    raise WebhookVerificationError("no v1a signature verifies with the exchange's keys")
