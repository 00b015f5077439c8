"""Member organisations (companies and peer exchanges) and their signing keys."""

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models


class Organisation(models.Model):
    """A member company or a peer exchange. Only active organisations authenticate."""

    class Kind(models.TextChoices):
        MEMBER = "member", "Member company"
        PEER = "peer", "Peer exchange"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.MEMBER)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    contact_email = models.EmailField(blank=True)
    contact_name = models.CharField(max_length=200, blank=True)
    # A peer exchange's id (its /.well-known/hashx ``exchange_id``): what its feed is filtered
    # by, so that nothing that passed through it is served back to it.
    exchange_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Quotas set by staff (empty: no limit), enforced as Redis token buckets
    # (exchange/ratelimit.py). They come with the signing key's row (select_related), so checking
    # them costs no query.
    requests_per_second = models.PositiveIntegerField(
        null=True, blank=True, help_text="Signed API requests per second (bursts up to this many)."
    )
    signals_per_day = models.PositiveIntegerField(
        null=True, blank=True, help_text="Signals published per day, over all sets."
    )
    match_queries_per_day = models.PositiveIntegerField(
        null=True, blank=True, help_text="Signals looked up through POST /api/v1/match per day."
    )

    # Not a field: the access generation (exchange.generation) under which a signed request
    # confirmed this instance; what it may read can then come from memory (signals.access).
    access_generation: str | None = None

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def audit_owner_org_id(self) -> int:
        """Events about an organisation are visible to that organisation."""
        return self.pk

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class SigningKey(models.Model):
    """An Ed25519 public key an organisation signs requests with.

    Lifecycle: active → retiring (still verifies until ``not_after``, for overlap during
    rotation) → revoked (refused at once). ``key_id`` is the RFC 7638 JWK thumbprint, the
    ``keyid`` of request signatures. ``last_used_at`` is refreshed at most once a minute.
    """

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        RETIRING = "retiring", "Retiring"
        REVOKED = "revoked", "Revoked"

    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="keys")
    key_id = models.CharField(max_length=64, unique=True)
    public_key = models.BinaryField(max_length=32)
    label = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    read_only = models.BooleanField(default=False)
    not_after = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["organisation", "created_at"]

    def __str__(self) -> str:
        return f"{self.key_id[:12]}… ({self.state})"

    @property
    def audit_owner_org_id(self) -> int:
        return self.organisation_id


class FeedToken(models.Model):
    """A read-only bearer token for partner systems that can only send a fixed header (a TAXII
    client, a MISP feed, a scheduled pull): accepted only by the feed endpoints, for the sets
    it names (``set_ids``) that its organisation may still read at the time of each request.

    Only the SHA-256 of the secret is kept; the secret (``hxft_…``) is shown once, when the
    token is created. ``hint`` (its first characters) tells tokens apart in lists.
    ``last_used_at`` is refreshed at most once a minute; every use is audited.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, related_name="feed_tokens"
    )
    name = models.CharField(max_length=200)
    digest = models.BinaryField(max_length=32, unique=True)
    hint = models.CharField(max_length=16)
    # Ids of signals.HashSet (the members app sits below signals: no foreign key to it).
    set_ids = ArrayField(models.BigIntegerField())
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["organisation", "created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @property
    def audit_owner_org_id(self) -> int:
        return self.organisation_id

    # The request's principal carries a token where it would carry a signing key: the audit
    # log names it by this id, and IsMember refuses any change made with it.
    @property
    def key_id(self) -> str:
        return f"feed-token:{self.pk}"

    read_only = True
