"""Hash sets, the signals in them, who contributed what, opinions, and publishing batches.

Change positions: every change to a ``SetEntry`` stamps it with ``(position_xid, position_seq)``:
the id of the writing transaction and a value of one exchange-wide sequence. Readers order by
that pair and serve only rows whose transaction is older than the oldest one still running
(``pg_snapshot_xmin``), so no transaction can later commit a change below a position a reader
has already passed (DESIGN.md "Change feed", the xid8 design). See ``signals.feed.positions``.
"""

import hashlib
import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Case, F, When
from django.db.models.functions import MD5
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from audit.fields import CurrentXactId, XID8Field
from members.models import Organisation


class NextPosition(models.Func):
    """``nextval('signals_position_seq')``: the exchange-wide change order."""

    template = "nextval('signals_position_seq')"
    arity = 0
    output_field = models.BigIntegerField()


class HashSet(models.Model):
    """A named collection of signals owned by one organisation."""

    class TLP(models.TextChoices):
        CLEAR = "clear", "TLP:CLEAR"
        GREEN = "green", "TLP:GREEN"
        AMBER = "amber", "TLP:AMBER"
        AMBER_STRICT = "amber+strict", "TLP:AMBER+STRICT"
        RED = "red", "TLP:RED"

    class Attribution(models.TextChoices):
        NAMED = "named", "Contributors are named"
        ANONYMOUS = "anonymous", "Contributors are counted, not named"

    class Distribution(models.TextChoices):
        OWNER = "owner", "Owner only"
        GRANTED = "granted", "Owner and granted organisations"
        COALITION = "coalition", "Every member of the coalition"
        FEDERATED = "federated", "The coalition and peer exchanges"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="owned_sets")
    # Empty: every signal type is allowed.
    signal_types = ArrayField(models.CharField(max_length=32), default=list, blank=True)
    tlp = models.CharField(max_length=16, choices=TLP.choices, default=TLP.AMBER)
    attribution = models.CharField(
        max_length=16, choices=Attribution.choices, default=Attribution.NAMED
    )
    distribution = models.CharField(
        max_length=16, choices=Distribution.choices, default=Distribution.GRANTED
    )
    pdq_threshold = models.PositiveSmallIntegerField(default=31)
    # vpdq: a video matches when this share (%) of the query's frames, and this share of its
    # own, match (python-threatexchange's VPDQ_QUERY_MATCH_THRESHOLD_PERCENT and
    # VPDQ_INDEX_MATCH_THRESHOLD_PERCENT).
    vpdq_query_match_percent = models.PositiveSmallIntegerField(default=80)
    vpdq_compared_match_percent = models.PositiveSmallIntegerField(default=0)
    # Federation: how many exchanges an entry of this set may travel through (the owner's
    # choice, 1 to 3); and, for a mirror of a peer's set, where it comes from (a mirror is
    # read-only here: only its origin adds or retracts).
    federation_hops = models.PositiveSmallIntegerField(
        default=1, help_text="exchanges an entry may pass through (1 to 3)"
    )
    origin_exchange = models.CharField(
        max_length=64, blank=True, help_text="a mirror: the exchange it is pulled from"
    )
    origin_set = models.CharField(max_length=64, blank=True, help_text="its slug there")
    origin_url = models.URLField(max_length=500, blank=True, help_text="that exchange's URL")
    # The exchanges a mirror's content passed through before this one, its origin first: a
    # set is never listed to an exchange on its path (no mirror of a mirror comes back).
    origin_path = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    # The set at the exchange of origin (``origin_path[0]``) its content comes from: a mirror
    # is one per origin set, however many peers it is reached through.
    origin_root_set = models.CharField(
        max_length=64, blank=True, default="", db_default="", help_text="its slug at the origin"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(pdq_threshold__lte=31), name="pdq_threshold_max_31"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    vpdq_query_match_percent__lte=100, vpdq_compared_match_percent__lte=100
                ),
                name="vpdq_match_percent_max_100",
            ),
            models.CheckConstraint(
                condition=models.Q(federation_hops__gte=1, federation_hops__lte=3),
                name="federation_hops_1_to_3",
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def audit_owner_org_id(self) -> int:
        return self.owner_id

    @property
    def is_mirror(self) -> bool:
        """A local copy of a peer exchange's set (federation): read-only here."""
        return bool(self.origin_exchange)


class SetGrant(models.Model):
    """What an organisation other than the owner may do with a set."""

    hash_set = models.ForeignKey(HashSet, on_delete=models.CASCADE, related_name="grants")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="set_grants"
    )
    can_read = models.BooleanField(default=True)
    can_publish = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hash_set", "organisation"], name="one_grant_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.organisation} on {self.hash_set}"

    @property
    def audit_owner_org_id(self) -> int:
        return self.hash_set.owner_id


# Values up to this many bytes are their own key in the entries' unique index (far below the
# 2,704 bytes a b-tree row holds, above every hash type's length); a longer value's key is its
# MD5 (hex) padded with spaces to one byte more, so never the key of a value up to this long:
# no value can be chosen to take a longer one's place.
VALUE_KEY_BYTES = 256


class OctetLength(models.Func):
    """``octet_length(text)``: bytes, read from the header (a long value is not decompressed)."""

    function = "octet_length"
    output_field = models.IntegerField()


class Rpad(models.Func):
    """``rpad(text, length)``: padded with spaces to ``length`` characters."""

    function = "rpad"
    output_field = models.TextField()


def value_key() -> Case:
    """The unique index's key of an entry's value: the value up to ``VALUE_KEY_BYTES``, its
    padded MD5 (hex) beyond."""
    return Case(
        When(
            GreaterThan(OctetLength("value"), VALUE_KEY_BYTES),
            then=Rpad(MD5("value"), VALUE_KEY_BYTES + 1),
        ),
        default=F("value"),
    )


def value_key_sql(value_sql: str) -> str:
    """SQL: the unique index's key of a value (an SQL expression), as ``value_key``."""
    return (
        f"CASE WHEN octet_length({value_sql}) > {VALUE_KEY_BYTES}"
        f" THEN rpad(md5({value_sql}), {VALUE_KEY_BYTES + 1}) ELSE {value_sql} END"
    )


def value_key_of(value: str) -> str:
    """The unique index's key of ``value``, computed here (to look a value up by its key)."""
    raw = value.encode()
    if len(raw) <= VALUE_KEY_BYTES:
        return value
    return hashlib.md5(raw, usedforsecurity=False).hexdigest().ljust(VALUE_KEY_BYTES + 1)


# ``INSERT INTO signals_setentry … ON CONFLICT {ENTRY_CONFLICT}``: the unique index's columns.
ENTRY_CONFLICT = f"(type, ({value_key_sql('value')}), hash_set_id)"


def entry_lookup(entry: str, type_sql: str, value_sql: str, in_sets: str = "") -> str:
    """SQL: the row ``entry`` (an alias of signals_setentry) holds the signal of this type and
    value (SQL expressions), probed through the (type, key) prefix of the unique
    (type, key, set) index and then compared by value, so two long values of one MD5 (only a
    forged pair has one) are never taken for one. The type and value are compared in the
    index's collation ("C"): compared in another (a parameter's, an ``unnest``'s default), the
    index could not serve the comparison.

    ``in_sets``: and the entry's set meets this condition (``"= %(set)s"``, ``"= ANY(…)"``),
    compared on ``hash_set_id + 0`` so that no index can take it alone. On the column itself,
    with a set's statistics older than its entries (its first large batch, before the analysis
    it queues), the planner took the (set, position) index for a row or two a probe and read
    every entry of the set once per staged line: 20,000 duplicates took 99 s of CPU
    (bench/merge_cpu.py) against 0.5 s. A value is in few sets: the prefix reads them all."""
    kind, value = f'({type_sql}) COLLATE "C"', f'({value_sql}) COLLATE "C"'
    sql = (
        f"{entry}.type = {kind}"
        f" AND {value_key_sql(entry + '.value')} = {value_key_sql(value)}"
        f" AND {entry}.value = {value}"
    )
    return f"{sql} AND {entry}.hash_set_id + 0 {in_sets}" if in_sets else sql


class SetEntry(models.Model):
    """A signal, a canonical (type, value), in a set, with what the exchange knows about it
    there. There is no table of signals apart from the entries (migration 0016 folded it in):
    the merge writes one row per new signal in a set, and probes one index per line."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        TOMBSTONE = "tombstone", "Retracted or expired"

    # No database FK constraints on the merge's hot tables: checking them at commit costs as much
    # as the merge itself, and the merge only ever links rows it has just read or written under
    # the set's lock; entries and sets are never deleted.
    hash_set = models.ForeignKey(
        HashSet,
        on_delete=models.PROTECT,
        related_name="entries",
        db_constraint=False,
        db_index=False,
    )
    # The signal: a canonical (type, value) (signals.types). Byte order ("C"): canonical values
    # need no linguistic collation, and the unique index on them is the merge's hottest
    # structure. The same signal in several sets is one entry in each, found across sets
    # through the unique index's (type, key) prefix (``entry_lookup``).
    type = models.CharField(max_length=32, db_collation="C")
    value = models.TextField(db_collation="C")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    labels = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    quality = models.PositiveSmallIntegerField(null=True, blank=True)
    contributor_count = models.PositiveIntegerField(default=0)
    # The only contributor while its contribution is the only one: a new signal's merge writes
    # it here rather than as a Contribution row (a row and two index entries less on every new
    # entry). Its contribution is then implied: the entry's labels, first and last seen at the
    # entry's first_seen, not retracted. Whoever needs it as a row writes it first
    # (``WRITE_CONTRIBUTOR``: the merge, when another member contributes or this one's
    # contribution changes; a retraction) and clears this.
    contributor = models.ForeignKey(
        Organisation,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        db_index=False,
        help_text="the only contributor, while its contribution is not written as a row",
    )
    # Slugs of the organisations with a live contribution, sorted: kept by the merge and by
    # retractions, so that serving a named set's feed never looks them up row by row.
    contributor_names = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    positive_count = models.PositiveIntegerField(default=0)
    negative_count = models.PositiveIntegerField(default=0)
    investigation_count = models.PositiveIntegerField(default=0)
    first_seen = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    # PDQ near-duplicates: the nearest entry of the same set that already existed, within the
    # set's threshold, when this one was merged (signals.actions.neardup), so variants group.
    near_duplicate_of = models.ForeignKey(
        "self",
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    near_duplicate_distance = models.PositiveSmallIntegerField(null=True, blank=True)
    # Federation provenance of a mirrored entry: its exchange of origin is ``path[0]``, where it
    # was this entry (set, id, first seen); ``path`` lists the exchanges it passed through before
    # this one, and ``hops_left`` how many more it may pass through from here (0: it stays with
    # this exchange's members). Local entries: empty path, no hops_left (the set's
    # ``federation_hops`` applies).
    # Database defaults as well: the merge and other set-based writers insert entries in SQL.
    origin_set = models.CharField(max_length=64, blank=True, default="", db_default="")
    # A mirrored entry: the peer exchanges that serve it active to this one now (it is
    # tombstoned when the last one stops); served back to none of them as active.
    via = ArrayField(models.CharField(max_length=64), default=list, db_default="{}", blank=True)
    origin_entry = models.BigIntegerField(null=True, blank=True)
    origin_first_seen = models.DateTimeField(null=True, blank=True)
    hops_left = models.PositiveSmallIntegerField(null=True, blank=True)
    path = ArrayField(models.CharField(max_length=64), default=list, db_default="{}", blank=True)
    # Set by the database on every insert; every UPDATE sets them anew (positions.NEW_POSITION).
    position_xid = XID8Field(db_default=CurrentXactId(), editable=False)
    position_seq = models.BigIntegerField(db_default=NextPosition(), editable=False)

    class Meta:
        constraints = [
            # One entry per signal and set. Keyed (type, key, set), the key being the value
            # itself up to ``VALUE_KEY_BYTES`` (every hash type) and its padded MD5 beyond: a
            # b-tree row holds at most 2,704 bytes, and a vpdq value of an hour's frames is a
            # hundred times that. Every lookup by value goes through its (type, key) prefix with
            # ``entry_lookup`` (the merge's probe of a set's entry compares the set after it);
            # ``ON CONFLICT`` names the whole key. A key costs a hash value nothing (an MD5 for
            # every value made the merge's CPU a quarter higher).
            models.UniqueConstraint(
                F("type"), value_key(), F("hash_set"), name="one_entry_per_set_value"
            )
        ]
        indexes = [
            models.Index(
                fields=["hash_set", "position_xid", "position_seq"], name="entry_set_position_idx"
            ),
            # The matching index follows every set's PDQ changes in one position order.
            models.Index(fields=["position_xid", "position_seq"], name="entry_position_idx"),
            models.Index(
                fields=["expires_at"],
                name="entry_expiry_idx",
                condition=models.Q(state="active", expires_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hash_set_id}/{self.type}:{self.value[:40]}"

    @property
    def audit_owner_org_id(self) -> int:
        return self.hash_set.owner_id


# SQL: write the implied contribution (``SetEntry.contributor``) of the entries ``{entries}``
# lists (a FROM item ``x(entry_id)``) as a row, and clear it from the entry.
WRITE_CONTRIBUTOR = """
WITH written AS (
    INSERT INTO signals_contribution
        (entry_id, organisation_id, labels, first_seen, last_seen, retracted_at)
    SELECT e.id, e.contributor_id, e.labels, e.first_seen, e.first_seen, NULL
    FROM {entries} JOIN signals_setentry e ON e.id = x.entry_id
    WHERE e.contributor_id IS NOT NULL
    RETURNING entry_id
)
UPDATE signals_setentry e SET contributor_id = NULL FROM written w WHERE e.id = w.entry_id
"""


class Contribution(models.Model):
    """One organisation's say that a signal belongs in a set; an entry's only contributor's is
    implied by ``SetEntry.contributor`` until it must be a row."""

    # See SetEntry: no FK constraints on the merge's hot tables; (entry, organisation) is unique.
    entry = models.ForeignKey(
        SetEntry,
        on_delete=models.CASCADE,
        related_name="contributions",
        db_constraint=False,
        db_index=False,
    )
    organisation = models.ForeignKey(
        Organisation,
        on_delete=models.PROTECT,
        related_name="contributions",
        db_constraint=False,
        db_index=False,
    )
    labels = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    retracted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["entry", "organisation"], name="one_contribution_per_org"
            )
        ]

    def __str__(self) -> str:
        return f"{self.organisation_id} → {self.entry_id}"


class Opinion(models.Model):
    """An organisation's feedback on an entry (python-threatexchange ``SignalOpinion``)."""

    class Category(models.TextChoices):
        POSITIVE = "positive", "Positive: it is what the set says"
        NEGATIVE = "negative", "Negative: a false positive"
        INVESTIGATION_SEED = "investigation_seed", "Investigation seed"

    entry = models.ForeignKey(SetEntry, on_delete=models.CASCADE, related_name="opinions")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, related_name="opinions"
    )
    category = models.CharField(max_length=32, choices=Category.choices)
    tags = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Stamped like an entry's (set on insert; every UPDATE sets them anew, NEW_POSITION): the
    # race-free order in which opinions changed, that federation forwards them in.
    position_xid = XID8Field(db_default=CurrentXactId(), editable=False)
    position_seq = models.BigIntegerField(db_default=NextPosition(), editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["entry", "organisation"], name="one_opinion_per_org")
        ]
        indexes = [
            models.Index(fields=["position_xid", "position_seq"], name="opinion_position_idx")
        ]

    def __str__(self) -> str:
        return f"{self.organisation_id} {self.category} {self.entry_id}"


def initial_parts() -> list[int]:
    """A new batch's merge progress: line 0 in each of ``HASHX_MERGE_PARTS`` parts."""
    return [0] * settings.HASHX_MERGE_PARTS


class Batch(models.Model):
    """One publish request: staged at once, merged by a worker in chunks, reported on."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued for merging"
        MERGING = "merging", "Merging"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hash_set = models.ForeignKey(HashSet, on_delete=models.PROTECT, related_name="batches")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="batches")
    key_id = models.CharField(max_length=64, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)
    answer = models.JSONField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    received = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    # Per part of the value space (signals.actions.merge): the next staged line it merges.
    parts_merged = ArrayField(
        models.PositiveIntegerField(), default=initial_parts, help_text="next line, per part"
    )
    new = models.PositiveIntegerField(default=0)
    duplicate = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    near_duplicates = models.PositiveIntegerField(
        default=0, help_text="new PDQ entries within the set's threshold of an older one"
    )
    link_ranges = models.JSONField(
        default=list,
        blank=True,
        help_text="[first id, last id, part] of new PDQ entries still to be linked to their"
        " near-duplicates (signals.actions.neardup)",
    )
    first_rejections = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="one_batch_per_idempotency_key",
            )
        ]
        indexes = [models.Index(fields=["state", "created_at"], name="batch_state_idx")]

    def __str__(self) -> str:
        return f"batch {self.id} ({self.state})"

    @property
    def merged(self) -> int:
        """Staged lines merged so far: every line below it, in every part."""
        return min(self.parts_merged)

    @property
    def audit_owner_org_id(self) -> int:
        return self.organisation_id


class StagedSignal(models.Model):
    """A validated line of a batch waiting for the merge (COPY target; deleted once merged).
    Keyed by (batch, line) alone: a serial id would cost every COPY a third of its time.

    UNLOGGED (migration 0013), as ``StagedBatch``: staging and unstaging a line wrote it to the
    WAL twice for a row that lives a few seconds. A crash of PostgreSQL (or a failover to a
    standby) empties both tables; ``StagedBatch`` tells the merge that it happened."""

    pk = models.CompositePrimaryKey("batch", "line")
    batch = models.ForeignKey(
        Batch, on_delete=models.CASCADE, db_constraint=False, db_index=False, related_name="+"
    )
    line = models.PositiveIntegerField()
    type = models.CharField(max_length=32, db_collation="C")
    value = models.TextField(db_collation="C")
    labels = ArrayField(models.CharField(max_length=100), default=list)
    quality = models.PositiveSmallIntegerField(null=True)
    expires_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.line}"


class StagedBatch(models.Model):
    """A batch whose lines are in ``StagedSignal``: written with them, deleted once the batch is
    merged. An open batch without one lost its lines when PostgreSQL crashed (both tables are
    UNLOGGED): the merge fails it rather than report it merged with nothing in it."""

    batch = models.OneToOneField(
        Batch, primary_key=True, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.batch_id} staged"


class FeedHorizon(models.Model):
    """The newest position of a purged tombstone: a cursor below it may have missed a
    retraction, so the feed answers it 410 (start again from a snapshot)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    purged_xid = XID8Field(default=0)
    purged_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"purged up to {self.purged_xid}.{self.purged_seq}"


class Subscription(models.Model):
    """A cursor the exchange advances for a subscriber: each delivery is the next feed page after
    it, POSTed to ``url`` (DESIGN.md "Push"). The cursor moves only when the receiver answers
    2xx, so a page is never skipped."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused by the subscriber"
        DISABLED = "disabled", "Disabled: the endpoint kept failing or asked to stop"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="subscriptions"
    )
    description = models.CharField(max_length=200, blank=True)
    url = models.URLField(max_length=2000)
    # Set ids, not a many-to-many: the dispatcher's "anything new?" query probes the entry
    # position index with them in one statement. Readability is checked again at every page.
    set_ids = ArrayField(models.BigIntegerField())
    signal_types = ArrayField(models.CharField(max_length=32), default=list, blank=True)
    labels = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    cursor_xid = XID8Field(default=0)
    cursor_seq = models.BigIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    last_delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["state"], name="subscription_state_idx")]

    def __str__(self) -> str:
        return f"{self.organisation_id} → {self.url}"

    @property
    def audit_owner_org_id(self) -> int:
        return self.organisation_id


# Where a delivery's envelope takes its page's changes.
EMPTY_CHANGES = '"changes":[]'


class DeliveryPage(models.Model):
    """The change records of a feed page as cut for delivery, stored once however many
    subscriptions' deliveries carry them (a publish fans out to hundreds): the elements of a
    JSON array, comma-joined. Purged with the last delivery that refers to it."""

    id = models.BigAutoField(primary_key=True)
    changes = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"delivery page {self.pk}"


class Delivery(models.Model):
    """One feed page for a subscription: its body is fixed when the page is cut, so every retry
    sends the same bytes under the same ``webhook-id``. At most one is pending per
    subscription (the constraint), which is what keeps deliveries in order."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        CANCELLED = "cancelled", "Cancelled (the subscription was rewound or changed)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    from_xid = XID8Field()
    from_seq = models.BigIntegerField()
    to_xid = XID8Field()
    to_seq = models.BigIntegerField()
    count = models.PositiveIntegerField()
    set_counts = models.JSONField(default=dict, help_text="changes per set slug (for the audit)")
    # The envelope (subscription, cursors, timestamp), its "changes" empty when ``page`` holds
    # them (``payload`` joins the two); the whole body in deliveries cut before pages were shared.
    body = models.TextField()
    page = models.ForeignKey(DeliveryPage, null=True, blank=True, on_delete=models.PROTECT)
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due; a claimed delivery has it pushed out by the lease, so a
    # worker that dies mid-send leaves it to be claimed again once the lease runs out.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claim = models.UUIDField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription"],
                condition=models.Q(state="pending"),
                name="one_pending_delivery_per_subscription",
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due_idx",
                condition=models.Q(state="pending"),
            ),
            models.Index(fields=["subscription", "-created_at"], name="delivery_sub_idx"),
        ]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"delivery {self.id} ({self.state})"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.id.hex}"

    @property
    def payload(self) -> bytes:
        """The bytes every attempt sends."""
        if self.page is None:
            return self.body.encode()
        return self.body.replace(EMPTY_CHANGES, f'"changes":[{self.page.changes}]', 1).encode()

    @property
    def audit_owner_org_id(self) -> int:
        return self.subscription.organisation_id
