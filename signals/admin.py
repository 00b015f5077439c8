"""Sets, entries and batches in Django admin: staff see everything, change sets and grants
(audited), and look up which sets hold a hash and who contributed it."""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.admin import AuditedAdminMixin
from exchange.admin_tools import ReadOnlyAdmin
from signals.models import Batch, Contribution, HashSet, Opinion, SetEntry, SetGrant
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
    search_fields = ["=signal__value"]
    search_help_text = "An exact value of any signal type (hex in any case, URL as given)."
    list_select_related = ["signal", "hash_set"]
    inlines = [ContributionInline, OpinionInline]
    show_full_result_count = False

    @admin.display(description="type", ordering="signal__type")
    def signal_type(self, entry: SetEntry) -> str:
        return entry.signal.type

    @admin.display(description="value")
    def signal_value(self, entry: SetEntry) -> str:
        value = entry.signal.value
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
        return queryset.filter(signal__value__in=spellings), False


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = ["id", "hash_set", "organisation", "state", "accepted", "rejected", "merged",
                    "new",
                    "duplicate", "updated", "created_at", "finished_at"]  # fmt: skip
    list_filter = ["state"]
    search_fields = ["=id", "hash_set__slug", "organisation__slug"]
    list_select_related = ["hash_set", "organisation"]
    exclude = ["answer"]
