from django.contrib import admin
from django.http import HttpRequest

from exchange.models import ExchangeIdentity, ExchangeKey


@admin.register(ExchangeIdentity)
class ExchangeIdentityAdmin(admin.ModelAdmin):
    list_display = ["exchange_id", "created_at"]
    readonly_fields = ["exchange_id", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ExchangeKey)
class ExchangeKeyAdmin(admin.ModelAdmin):
    """Read-only: keys are created by init_exchange; private halves are never shown."""

    list_display = ["kid", "current", "created_at", "retired_at"]
    fields = readonly_fields = ("kid", "current", "created_at", "retired_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
