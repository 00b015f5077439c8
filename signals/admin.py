"""Sets, entries and batches in Django admin: staff see everything, change sets and grants
(audited), and look up which sets hold a hash and who contributed it."""

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest

from audit.admin import AuditedAdminMixin
from exchange import generation
from exchange.admin_tools import ReadOnlyAdmin, confirm_with_reason
from signals.actions.merge import do_retry_batch
from signals.actions.subscriptions import do_redeliver, do_update_subscription
from signals.feed.positions import Position, visible_horizon
from signals.feed.reads import LAG_CAP, SQL_LAG
from signals.models import (
    Batch,
    Contribution,
    Delivery,
    HashSet,
    Opinion,
    SetEntry,
    SetGrant,
    Subscription,
    value_key,
    value_key_of,
)
from signals.types import SIGNAL_TYPES, SignalTypeError


class SetGrantInline(admin.TabularInline):
    model = SetGrant
    extra = 1
    autocomplete_fields = ["organisation"]
    fields = ["organisation", "can_read", "can_publish", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(HashSet)
class HashSetAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["slug", "name", "owner", "distribution", "tlp", "attribution", "created_at"]
    list_filter = ["distribution", "tlp", "attribution"]
    search_fields = ["slug", "name", "owner__slug"]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    inlines = [SetGrantInline]

    # Who may read what changes with a set's distribution and its grants: every process reads
    # it again on its next request (exchange.generation).
    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        generation.invalidate_on_commit()

    def delete_model(self, request: HttpRequest, obj: HashSet) -> None:
        super().delete_model(request, obj)
        generation.invalidate_on_commit()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[HashSet]) -> None:
        with transaction.atomic():
            super().delete_queryset(request, queryset)
            generation.invalidate_on_commit()


class ContributionInline(admin.TabularInline):
    model = Contribution
    extra = 0
    can_delete = False
    fields = readonly_fields = ("organisation", "labels", "first_seen", "last_seen", "retracted_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OpinionInline(admin.TabularInline):
    model = Opinion
    extra = 0
    can_delete = False
    fields = readonly_fields = ("organisation", "category", "tags", "updated_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SetEntry)
class SetEntryAdmin(ReadOnlyAdmin):
    """Search by a hash value (any spelling): which sets hold it, contributed by whom."""

    list_display = [
        "signal_type", "signal_value", "hash_set", "state", "contributor_count", "updated_at",
    ]  # fmt: skip
    list_filter = ["state", "hash_set"]
    search_fields = ["=value"]
    search_help_text = "An exact value of any signal type (hex in any case, URL as given)."
    list_select_related = ["hash_set"]
    inlines = [ContributionInline, OpinionInline]
    show_full_result_count = False

    @admin.display(description="type", ordering="type")
    def signal_type(self, entry: SetEntry) -> str:
        return entry.type

    @admin.display(description="value")
    def signal_value(self, entry: SetEntry) -> str:
        value = entry.value
        return value if len(value) <= 80 else value[:77] + "…"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[SetEntry], search_term: str
    ) -> tuple[QuerySet[SetEntry], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # Every canonical spelling the term could have, so "ABCD…" finds "abcd…".
        spellings = {term}
        for signal_type in SIGNAL_TYPES.values():
            try:
                spellings.add(signal_type.canonical(term))
            except SignalTypeError:
                continue
        # Through the (type, key) prefix of the entries' unique (type, key, set) index.
        found = queryset.alias(key=value_key()).filter(
            type__in=list(SIGNAL_TYPES),
            key__in=[value_key_of(spelling) for spelling in spellings],
            value__in=spellings,
        )
        return found, False


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = ["id", "hash_set", "organisation", "state", "accepted", "rejected", "merged",
                    "new",
                    "duplicate", "updated", "created_at", "finished_at"]  # fmt: skip
    list_filter = ["state"]
    search_fields = ["=id", "hash_set__slug", "organisation__slug"]
    list_select_related = ["hash_set", "organisation"]
    exclude = ["answer"]
    actions = ["merge_again"]

    @admin.action(description="Merge failed batches again (from where they stopped)")
    def merge_again(self, request: HttpRequest, queryset: QuerySet[Batch]) -> Any:
        def apply(batch: Batch, reason: str) -> bool:
            return do_retry_batch(batch, actor_user=request.user, reason=reason)

        return confirm_with_reason(
            self, request, queryset, action="merge_again", title="Merge again", apply=apply
        )


class DeliveryInline(admin.TabularInline):
    """The newest deliveries of a subscription (the full history: Deliveries)."""

    model = Delivery
    extra = 0
    can_delete = False
    max_num = 0
    fields = readonly_fields = (
        "webhook_id", "state", "count", "attempts", "last_status", "last_error",
        "next_attempt_at", "created_at", "delivered_at",
    )  # fmt: skip
    ordering = ["-created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).defer("body")


@admin.register(Subscription)
class SubscriptionAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Webhook subscriptions: state, how far behind (lag), the last error. Staff pause,
    resume or redeliver (with a reason, audited); members change them through the API."""

    list_display = [
        "organisation", "url", "state", "lag", "last_delivered_at", "failing_since", "last_error",
    ]  # fmt: skip
    list_filter = ["state"]
    search_fields = ["organisation__slug", "url", "=id"]
    list_select_related = ["organisation"]
    fields = readonly_fields = (
        "organisation", "url", "set_slugs", "signal_types", "labels", "state", "cursor", "lag",
        "failing_since", "last_error", "disabled_reason", "last_delivered_at", "created_at",
    )  # fmt: skip
    inlines = [DeliveryInline]
    actions = ["redeliver", "pause"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Subscription]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                behind=RawSQL(SQL_LAG, [str(visible_horizon()), LAG_CAP])  # noqa: S611 - constant
            )
        )

    @admin.display(description="lag (changes behind)", ordering="behind")
    def lag(self, subscription: Any) -> str:
        behind = subscription.behind
        return f"{behind:,}+" if behind >= LAG_CAP else f"{behind:,}"

    @admin.display(description="sets")
    def set_slugs(self, subscription: Subscription) -> str:
        slugs = HashSet.objects.filter(pk__in=subscription.set_ids).values_list("slug", flat=True)
        return ", ".join(slugs)

    @admin.display(description="cursor")
    def cursor(self, subscription: Subscription) -> str:
        return Position(subscription.cursor_xid, subscription.cursor_seq).cursor()

    @admin.action(description="Redeliver now (resume and send the pending page)")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> Any:
        def apply(subscription: Subscription, reason: str) -> bool:
            do_redeliver(subscription, actor_user=request.user, reason=reason)
            return True

        return confirm_with_reason(
            self, request, queryset, action="redeliver", title="Redeliver", apply=apply
        )

    @admin.action(description="Pause selected subscriptions")
    def pause(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> Any:
        def apply(subscription: Subscription, reason: str) -> bool:
            if subscription.state == Subscription.State.PAUSED:
                return False
            do_update_subscription(
                subscription, {"active": False}, actor_user=request.user, reason=reason
            )
            return True

        return confirm_with_reason(
            self, request, queryset, action="pause", title="Pause", apply=apply
        )


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "webhook_id", "subscription", "state", "count", "attempts", "last_status", "last_error",
        "next_attempt_at", "created_at", "delivered_at",
    ]  # fmt: skip
    list_filter = ["state"]
    search_fields = ["=id", "subscription__organisation__slug", "subscription__url"]
    list_select_related = ["subscription__organisation"]
    show_full_result_count = False
