"""Peer exchanges this exchange pulls from, and the cursor of every remote set it mirrors
(DESIGN.md "Federation")."""

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from members.models import Organisation
from signals.models import HashSet


class Peer(models.Model):
    """Another exchange, pinned by its Ed25519 key: this exchange pulls the sets it may read
    there into local mirrors. Its ``organisation`` (kind peer, holding the same key) is how it
    reads here.

    States: active (pulled on schedule, backing off after failures), paused (by staff), stopped
    (a failure that retrying cannot mend: refused credentials, a key that changed without
    proof; staff resume it once mended). ``last_error`` says what happened in plain words.
    """

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused by staff"
        STOPPED = "stopped", "Stopped: needs staff (see last error)"

    name = models.SlugField(max_length=40, unique=True)
    url = models.URLField(max_length=500)
    exchange_id = models.CharField(max_length=64, unique=True)
    organisation = models.OneToOneField(
        Organisation, on_delete=models.PROTECT, related_name="peer_link"
    )
    key_id = models.CharField(max_length=64, help_text="the pinned key's RFC 7638 thumbprint")
    public_key = models.BinaryField(max_length=32)
    # The peer's next key, endorsed by the pinned one (a rotation it announced): followed when
    # it becomes the peer's current key.
    next_key_id = models.CharField(max_length=64, blank=True)
    next_public_key = models.BinaryField(max_length=32, null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    last_error = models.CharField(max_length=500, blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="failed pulls in a row")
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_applied = models.PositiveIntegerField(
        default=0, help_text="changes the last complete pull applied (how far behind it was)"
    )
    # Push-assist: the subscription this exchange holds at the peer, whose webhooks (to
    # /federation/push/<its exchange id> here) wake a pull at once, and the sets it names.
    push_subscription = models.CharField(max_length=64, blank=True)
    push_sets = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    push_error = models.CharField(max_length=500, blank=True)
    # Opinions of this exchange's members on the mirrors, forwarded to the peer up to this
    # opinion position (``signals.feed.positions`` cursor; "" before the first).
    opinions_cursor = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def audit_owner_org_id(self) -> int:
        return self.organisation_id

    @property
    def fingerprint(self) -> str:
        return f"SHA256:{self.key_id}"


class MirroredSet(models.Model):
    """A set of a peer, pulled into ``hash_set`` (a local mirror owned by the peer's
    organisation), with the peer's feed cursor: the cursor moves in the same transaction as the
    changes it covers, so a pull killed anywhere resumes exactly once."""

    peer = models.ForeignKey(Peer, on_delete=models.CASCADE, related_name="mirrors")
    remote_slug = models.CharField(max_length=64)
    # One local mirror per origin set: the same origin set reached through two peers is two
    # MirroredSets (two paths, two cursors) of one HashSet.
    hash_set = models.ForeignKey(HashSet, on_delete=models.PROTECT, related_name="mirrors")
    cursor = models.CharField(max_length=200, blank=True)
    applied = models.PositiveBigIntegerField(default=0, help_text="changes applied, in all")
    refused = models.PositiveBigIntegerField(
        default=0, help_text="changes refused (should not have been sent, or malformed)"
    )
    resyncs = models.PositiveIntegerField(default=0, help_text="snapshot resyncs after a 410")
    last_pulled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["peer", "remote_slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["peer", "remote_slug"], name="one_mirror_per_remote_set"
            )
        ]

    def __str__(self) -> str:
        return f"{self.peer.name}/{self.remote_slug}"

    @property
    def audit_owner_org_id(self) -> int:
        return self.peer.organisation_id


class ResyncSeen(models.Model):
    """An entry of the mirror's set that a resync of ``mirror`` has applied from the peer's
    snapshot so far. A resync commits chunk by chunk (millions of entries are not one
    transaction); what the snapshot did not hold is tombstoned only once it has been applied to
    its end, against these rows, which are then dropped (and dropped when a resync starts
    over)."""

    pk = models.CompositePrimaryKey("mirror", "entry_id")
    mirror = models.ForeignKey(MirroredSet, on_delete=models.CASCADE, related_name="+")
    entry_id = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.mirror_id}: {self.entry_id}"
