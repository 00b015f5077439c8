from django.contrib import admin

from exchange.admin_tools import ReadOnlyAdmin
from exchange.models import ExchangeIdentity, ExchangeKey


@admin.register(ExchangeIdentity)
class ExchangeIdentityAdmin(ReadOnlyAdmin):
    list_display = ["exchange_id", "created_at"]
    readonly_fields = ["exchange_id", "created_at"]


@admin.register(ExchangeKey)
class ExchangeKeyAdmin(ReadOnlyAdmin):
    """Keys are created by init_exchange; private halves are never shown."""

    list_display = ["kid", "current", "created_at", "retired_at"]
    fields = readonly_fields = ("kid", "current", "created_at", "retired_at")
