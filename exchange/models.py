"""The exchange's own identity: its id and the Ed25519 keys it signs with."""

import uuid

from django.db import models


def new_exchange_id() -> str:
    return f"hx-{uuid.uuid4()}"


class ExchangeIdentity(models.Model):
    """The single row naming this exchange to peers (``/.well-known/hashx``)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    exchange_id = models.CharField(
        max_length=64, unique=True, default=new_exchange_id, editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="exchange_identity_singleton")
        ]

    def __str__(self) -> str:
        return self.exchange_id


class ExchangeKey(models.Model):
    """An Ed25519 key of the exchange. Exactly one is current (signs); older ones stay published
    so that signatures they made (audit checkpoints, webhooks) still verify.

    ``private_key_pem`` is empty when the key lives in ``HASHX_EXCHANGE_KEY_FILE``.
    """

    kid = models.CharField(max_length=64, unique=True)
    public_key = models.BinaryField(max_length=32)
    private_key_pem = models.TextField(blank=True, default="")
    current = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    # A key rotation announced to peers (``rotate_exchange_key``): the next key, signed by the key
    # that was current when it was made (``endorsed_by``), so that peers who pinned that one may
    # follow (federation) before it becomes current.
    endorsed_by = models.CharField(max_length=64, blank=True)
    endorsement = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["current"],
                condition=models.Q(current=True),
                name="one_current_exchange_key",
            )
        ]

    def __str__(self) -> str:
        return self.kid
