"""Signed checkpoints: the exchange's Ed25519 signature over the chain head."""

import base64
from datetime import UTC
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import connection, transaction
from django.utils import timezone

from audit.access import latest_checkpoint
from audit.actions.record import canonical_json
from audit.actions.seal import SEAL_LOCK, chain_head
from audit.models import AuditCheckpoint
from exchange.actions.identity import get_identity, get_signing_key
from exchange.models import ExchangeKey
from hashx.keys import b64url


def checkpoint_document(cp: AuditCheckpoint) -> dict[str, Any]:
    """The signed fields, as the API returns them and as ``signing_input`` serialises them."""
    return {
        "exchange_id": cp.exchange_id,
        "tree_size": cp.tree_size,
        "head_hash": cp.head_hash,
        "issued_at": cp.issued_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "kid": cp.kid,
    }


def signing_input(cp: AuditCheckpoint) -> bytes:
    """What the signature covers: canonical JSON (sorted keys, no whitespace, UTF-8) of the
    checkpoint document."""
    return canonical_json(checkpoint_document(cp))


def do_sign_checkpoint(*, only_if_changed: bool = False) -> AuditCheckpoint | None:
    """Sign the current chain head with the exchange key and append the checkpoint.

    Locks: the sealer's advisory lock (blocking), so the head cannot move while it is read.
    With ``only_if_changed`` (beat) nothing is written when no event was sealed since the last
    checkpoint.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEAL_LOCK])
        tree_size, head = chain_head()
        latest = latest_checkpoint()
        if only_if_changed and latest is not None and latest.tree_size == tree_size:
            return None
        kid, key = get_signing_key()
        cp = AuditCheckpoint(
            tree_size=tree_size,
            head_hash=head,
            issued_at=timezone.now().replace(microsecond=0),
            exchange_id=get_identity().exchange_id,
            kid=kid,
        )
        cp.signature = b64url(key.sign(signing_input(cp)))
        cp.save()
        return cp


def verify_checkpoint_signature(cp: AuditCheckpoint) -> bool:
    """True when the signature verifies with the published exchange key ``cp.kid``."""
    key = ExchangeKey.objects.filter(kid=cp.kid).first()
    if key is None:
        return False
    try:
        signature = base64.urlsafe_b64decode(cp.signature + "=" * (-len(cp.signature) % 4))
        Ed25519PublicKey.from_public_bytes(bytes(key.public_key)).verify(
            signature, signing_input(cp)
        )
    except (InvalidSignature, ValueError):
        return False
    return True
