from datetime import datetime
from typing import Any

from rest_framework import serializers

from exchange.fields import BoundedList, ParsedJSON
from signals.access import MAX_SETS
from signals.actions.merge import STAGING_LOST
from signals.feed.positions import Position
from signals.models import Batch, Delivery, HashSet, Subscription
from signals.types import SIGNAL_TYPES

MAX_DESCRIPTION = 2000
MAX_ITEMS = 10_000


def signal_types_field(help_text: str) -> BoundedList:
    """Signal type names: at most as many as there are types."""
    return BoundedList(
        child=serializers.ChoiceField(choices=list(SIGNAL_TYPES)),
        max_length=len(SIGNAL_TYPES),
        required=False,
        default=list,
        help_text=help_text,
    )


class SetSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(
        max_length=MAX_DESCRIPTION, allow_blank=True, required=False, default=""
    )
    owner = serializers.CharField(source="owner.slug", read_only=True)
    signal_types = signal_types_field("types the set takes; empty: all")
    tlp = serializers.ChoiceField(choices=HashSet.TLP.choices, default=HashSet.TLP.AMBER)
    attribution = serializers.ChoiceField(
        choices=HashSet.Attribution.choices, default=HashSet.Attribution.NAMED
    )
    distribution = serializers.ChoiceField(
        choices=HashSet.Distribution.choices, default=HashSet.Distribution.GRANTED
    )
    pdq_threshold = serializers.IntegerField(min_value=0, max_value=31, default=31)
    vpdq_query_match_percent = serializers.IntegerField(
        min_value=0, max_value=100, default=80,
        help_text="vpdq: share (%) of a query video's frames that must match",
    )  # fmt: skip
    vpdq_compared_match_percent = serializers.IntegerField(
        min_value=0, max_value=100, default=0,
        help_text="vpdq: share (%) of the matched video's own frames that must match",
    )  # fmt: skip
    federation_hops = serializers.IntegerField(
        min_value=1, max_value=3, default=1,
        help_text="federated sets: how many exchanges an entry may pass through",
    )  # fmt: skip
    origin = serializers.SerializerMethodField(
        help_text="a mirror of a peer exchange's set: that exchange, its slug there, its URL,"
        " the exchanges its content passed through (origin first), and its slug at the origin"
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def get_origin(self, hash_set: HashSet) -> dict[str, Any] | None:
        if not hash_set.is_mirror:
            return None
        return {
            "exchange": hash_set.origin_exchange,
            "set": hash_set.origin_set,
            "url": hash_set.origin_url,
            "path": hash_set.origin_path,
            "root_set": hash_set.origin_root_set or hash_set.origin_set,
        }


class SetUpdateSerializer(SetSerializer):
    """PATCH: any of the changeable fields; the slug and owner stay."""

    slug = serializers.SlugField(read_only=True)


class GrantSerializer(serializers.Serializer):
    can_read = serializers.BooleanField(default=True)
    can_publish = serializers.BooleanField(default=False)


class GrantListSerializer(serializers.Serializer):
    organisation = serializers.CharField(source="organisation.slug")
    can_read = serializers.BooleanField()
    can_publish = serializers.BooleanField()


class PublishSerializer(serializers.Serializer):
    signals = BoundedList(
        child=ParsedJSON(), max_length=MAX_ITEMS,
        too_large=f"send at most {MAX_ITEMS:,} or stream NDJSON",
        help_text=f"up to {MAX_ITEMS:,} items: type, value, labels, expires_at, quality",
    )  # fmt: skip
    atomic = serializers.BooleanField(
        default=False, help_text="refuse everything if one item is rejected"
    )


class BatchSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    set = serializers.CharField(source="hash_set.slug")
    state = serializers.ChoiceField(choices=Batch.State.choices)
    received = serializers.IntegerField()
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    merged = serializers.IntegerField(help_text="accepted lines merged so far")
    progress = serializers.SerializerMethodField(help_text="merged / accepted, 0 to 1")
    new = serializers.IntegerField()
    duplicate = serializers.IntegerField()
    near_duplicates = serializers.IntegerField(
        help_text="new PDQ entries within the set's threshold of an older entry (counted by a"
        " task that runs after the merge: see near_duplicates_pending)"
    )
    near_duplicates_pending = serializers.SerializerMethodField(
        help_text="true while new PDQ entries are still to be linked to their near-duplicates"
    )
    updated = serializers.IntegerField()
    first_rejections = serializers.ListField(child=serializers.DictField())
    error = serializers.CharField(help_text="why a failed batch could not be merged")
    resend = serializers.SerializerMethodField(
        help_text="true for a failed batch whose staged signals were lost before their merge (a"
        " crash of the exchange's database): send the same request again, with the same"
        " Idempotency-Key (the batch gave it up); hashx publish does"
    )
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_near_duplicates_pending(self, batch: Batch) -> bool:
        return bool(batch.link_ranges)

    def get_resend(self, batch: Batch) -> bool:
        return batch.state == Batch.State.FAILED and batch.error == STAGING_LOST

    def get_progress(self, batch: Batch) -> float:
        return 1.0 if not batch.accepted else round(batch.merged / batch.accepted, 4)


class ItemsSerializer(serializers.Serializer):
    signals = BoundedList(
        child=ParsedJSON(), max_length=MAX_ITEMS,
        help_text='each {"entry": id} or {"type": …, "value": …}; opinions add category and tags',
    )  # fmt: skip


class RejectionSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    reason = serializers.CharField()


class RetractAnswerSerializer(serializers.Serializer):
    retracted = serializers.IntegerField(help_text="your contributions retracted")
    tombstoned = serializers.IntegerField(help_text="entries that became tombstones")
    rejected = serializers.IntegerField()
    rejections = RejectionSerializer(many=True)


class OpinionAnswerSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    rejections = RejectionSerializer(many=True)


class ChangeSerializer(serializers.Serializer):
    entry = serializers.IntegerField()
    set = serializers.CharField()
    type = serializers.CharField()
    value = serializers.CharField()
    state = serializers.ChoiceField(choices=["active", "tombstone"])
    labels = serializers.ListField(child=serializers.CharField())
    contributors = serializers.IntegerField()
    contributor_names = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="only where the set names contributors",
    )
    opinions = serializers.DictField(
        child=serializers.IntegerField(), help_text="positive, negative, investigation_seed"
    )
    disputed = serializers.BooleanField(help_text="both positive and negative opinions")
    first_seen = serializers.DateTimeField()
    updated = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    near_duplicate_of = serializers.IntegerField(
        allow_null=True,
        help_text="pdq: the nearest entry of the set that existed when this one was merged",
    )
    hops_left = serializers.IntegerField(
        help_text="exchanges it may still pass through (federation); 0: it stays here"
    )
    path = serializers.ListField(
        child=serializers.CharField(), help_text="the exchanges it passed through, this one last"
    )
    origin = serializers.DictField(
        allow_null=True,
        help_text="mirrored from a peer: exchange, set, entry and first_seen at its origin",
    )


class ChangesPageSerializer(serializers.Serializer):
    changes = ChangeSerializer(many=True)
    cursor = serializers.CharField(help_text="give it back to continue after this page")
    more = serializers.BooleanField(help_text="true when more changes are ready now")


class SubscriptionSerializer(serializers.Serializer):
    """A subscription as members create (POST), change (PATCH) and read it."""

    id = serializers.UUIDField(read_only=True)
    url = serializers.CharField(
        max_length=2000, help_text="https endpoint the exchange POSTs pages to"
    )
    sets = BoundedList(
        child=serializers.SlugField(max_length=64), min_length=1, max_length=MAX_SETS,
        help_text="slugs of sets you read",
    )  # fmt: skip
    signal_types = signal_types_field("only changes of these types; empty: all")
    labels = BoundedList(
        child=serializers.CharField(max_length=100), required=False, default=list,
        max_length=100, help_text="only entries carrying one of these labels; empty: all",
    )  # fmt: skip
    description = serializers.CharField(
        max_length=200, allow_blank=True, required=False, default=""
    )
    active = serializers.BooleanField(
        required=False, default=True, help_text="false pauses; true resumes (also after disabling)"
    )
    cursor = serializers.CharField(
        required=False,
        max_length=200,
        help_text="on create: the feed cursor to start after (default: now); read: where it is",
    )
    state = serializers.ChoiceField(choices=Subscription.State.choices, read_only=True)
    disabled_reason = serializers.CharField(read_only=True)
    last_error = serializers.CharField(read_only=True)
    failing_since = serializers.DateTimeField(read_only=True, allow_null=True)
    last_delivered_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: Subscription) -> dict[str, Any]:
        slugs: dict[int, str] = self.context["set_slugs"]
        return {
            "id": str(instance.pk),
            "url": instance.url,
            "sets": [slugs[i] for i in instance.set_ids if i in slugs],
            "signal_types": instance.signal_types,
            "labels": instance.labels,
            "description": instance.description,
            "active": instance.state == Subscription.State.ACTIVE,
            "state": instance.state,
            "cursor": Position(instance.cursor_xid, instance.cursor_seq).cursor(),
            "disabled_reason": instance.disabled_reason,
            "last_error": instance.last_error,
            "failing_since": _iso(instance.failing_since),
            "last_delivered_at": _iso(instance.last_delivered_at),
            "created_at": _iso(instance.created_at),
            "updated_at": _iso(instance.updated_at),
        }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


class SubscriptionUpdateSerializer(SubscriptionSerializer):
    """PATCH: any of url, sets, signal_types, labels, description, active."""

    cursor = serializers.CharField(read_only=True)


class DeliverySerializer(serializers.Serializer):
    id = serializers.CharField(source="webhook_id", help_text="the webhook-id header")
    state = serializers.ChoiceField(choices=Delivery.State.choices)
    count = serializers.IntegerField(help_text="changes in the page")
    from_cursor = serializers.SerializerMethodField()
    cursor = serializers.SerializerMethodField(help_text="where the subscription moves on 2xx")
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(help_text="when pending: the next try")
    last_status = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    response_excerpt = serializers.CharField()
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)

    def get_from_cursor(self, delivery: Delivery) -> str:
        return Position(delivery.from_xid, delivery.from_seq).cursor()

    def get_cursor(self, delivery: Delivery) -> str:
        return Position(delivery.to_xid, delivery.to_seq).cursor()


class RedeliverSerializer(serializers.Serializer):
    cursor = serializers.CharField(
        required=False, max_length=200, help_text="rewind to this feed cursor and send again"
    )
    delivery = serializers.CharField(
        required=False, max_length=100, help_text="rewind to where this delivery (id) started"
    )


class MatchRequestSerializer(serializers.Serializer):
    signals = BoundedList(
        child=ParsedJSON(), max_length=MAX_ITEMS,
        too_large=f"send at most {MAX_ITEMS:,}",
        help_text="up to 10,000 queries: type, value, optional sets (slugs) and max_distance",
    )  # fmt: skip


class MatchAnswerSerializer(serializers.Serializer):
    results = serializers.ListField(
        child=serializers.JSONField(),
        help_text="one per query, in order: type, value and matches (set, entry, value, "
        "distance, labels, contributors, opinions, disputed, near_duplicate_of; for vpdq also "
        "query_match_percent and compared_match_percent)",
    )
    position = serializers.CharField(
        allow_null=True, help_text="feed cursor the PDQ index answered as of (null: no PDQ)"
    )
