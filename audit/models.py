"""The append-only, hash-chained audit log.

``AuditEvent`` rows are written by ``audit.actions.record`` in the caller's transaction. The
sealer (``audit.actions.seal``) later appends one ``AuditSeal`` per event in a single order:
``seq`` 1, 2, 3… and ``hash = sha256(prev_hash || canonical JSON of the event)``. Signed
``AuditCheckpoint`` rows commit the exchange to a chain head. All three tables are append-only
in the database: triggers refuse UPDATE, DELETE and TRUNCATE (migration 0002). Tamper
evidence against someone who can bypass triggers comes from the chain and the signatures,
which ``manage.py verify_audit`` checks.

Actor and owner organisations are kept as references without a database constraint: the log
must outlive and never block changes to the rows it mentions.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from audit.fields import CurrentXactId, XID8Field


class AuditEvent(models.Model):
    """Something that happened: who (organisation and key, or staff user), from where (IP,
    request id), what (dotted action), to what (object type and id, and the organisation that
    owns it) and details (bounded JSON)."""

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The inserting transaction; the sealer seals only events of finished transactions.
    xid = XID8Field(db_default=CurrentXactId(), editable=False)
    action = models.CharField(max_length=100)
    actor_org = models.ForeignKey(
        "members.Organisation",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # audit_event_actor_idx leads with it
        related_name="+",
    )
    actor_key_id = models.CharField(max_length=64, blank=True)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # nothing reads events by user id
        related_name="+",
    )
    # Usernames change; keep the one the actor had when they acted.
    actor_username = models.CharField(max_length=150, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    # Not indexed: staff search it (admin), which no btree serves; the logs are grepped by it.
    request_id = models.CharField(max_length=64, blank=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=128, blank=True)
    owner_org = models.ForeignKey(
        "members.Organisation",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # audit_event_owner_idx leads with it
        related_name="+",
    )
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        # Every request that reads or writes shared data writes an event, so each index here
        # is paid for on most requests: only those a read uses. One pattern-ops index on the
        # action serves both of the API's filters (equal, and starts with).
        indexes = [
            models.Index(
                fields=["action"], opclasses=["varchar_pattern_ops"], name="audit_event_action_idx"
            ),
            models.Index(fields=["actor_org", "-id"], name="audit_event_actor_idx"),
            models.Index(fields=["owner_org", "-id"], name="audit_event_owner_idx"),
            models.Index(fields=["object_type", "object_id"], name="audit_event_object_idx"),
            models.Index(fields=["xid"], name="audit_event_xid_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action}"


class AuditSeal(models.Model):
    """The event's place in the chain. Appended once per event by the sealer."""

    seq = models.BigIntegerField(primary_key=True)
    event = models.OneToOneField(AuditEvent, on_delete=models.PROTECT, related_name="seal")
    hash = models.CharField(max_length=64)
    sealed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash[:12]}"


class AuditCheckpoint(models.Model):
    """A signed statement by the exchange: "the chain had ``tree_size`` events and its head was
    ``head_hash`` at ``issued_at``". The signature is Ed25519 by key ``kid`` over the canonical
    JSON of the other fields (see ``audit.actions.checkpoint.signing_input``)."""

    tree_size = models.BigIntegerField()
    head_hash = models.CharField(max_length=64)
    issued_at = models.DateTimeField()
    exchange_id = models.CharField(max_length=64)
    kid = models.CharField(max_length=64)
    signature = models.CharField(max_length=128)

    class Meta:
        get_latest_by = "id"

    def __str__(self) -> str:
        return f"checkpoint {self.tree_size} @ {self.issued_at:%Y-%m-%d %H:%M}"


class AuditSealerState(models.Model):
    """Where the sealer may start looking: every event of a transaction older than ``xid_floor``
    is sealed. Only an optimisation (``verify_audit`` does not trust it); the one mutable row."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    xid_floor = XID8Field(default=0)

    def __str__(self) -> str:
        return f"sealer floor {self.xid_floor}"
