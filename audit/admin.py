"""Staff views of the audit log (read-only), and the mixin that audits every admin change."""

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from audit.actions import record
from audit.actions.checkpoint import do_sign_checkpoint, verify_checkpoint_signature
from audit.actions.export import iter_ndjson
from audit.actions.seal import do_seal_pending
from audit.models import AuditCheckpoint, AuditEvent
from exchange.admin_tools import ReadOnlyAdmin


class AuditedAdminMixin:
    """Record every add, change and delete made in the admin as an audit event, in the same
    transaction as the change (Django's LogEntry alone can be edited and carries no IP or
    request id). Use it on every ModelAdmin."""

    def _record(self, request: HttpRequest, obj: Model, verb: str, message: Any = "") -> None:
        record(
            f"admin.{obj._meta.label_lower}.{verb}",
            obj=obj,
            request=request,
            details={"repr": str(obj)[:200], "change": message}
            if message
            else {"repr": str(obj)[:200]},
        )

    def log_addition(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        self._record(request, obj, "added", message)
        return super().log_addition(request, obj, message)  # type: ignore[misc]

    def log_change(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        self._record(request, obj, "changed", message)
        return super().log_change(request, obj, message)  # type: ignore[misc]

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        for obj in queryset:
            self._record(request, obj, "deleted")
        return super().log_deletions(request, queryset)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        # The bulk "delete selected" action logs first, then deletes: keep both in one transaction.
        with transaction.atomic():
            super().delete_queryset(request, queryset)  # type: ignore[misc]


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class AuditedUserAdmin(AuditedAdminMixin, UserAdmin):
    pass


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdminMixin, GroupAdmin):
    pass


class ExportForm(forms.Form):
    since = forms.DateTimeField(required=False, help_text="UTC, inclusive, e.g. 2026-01-01 00:00")
    until = forms.DateTimeField(required=False, help_text="UTC, exclusive")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "occurred_at",
        "action",
        "actor",
        "object_type",
        "object_id",
        "owner_org",
        "ip",
        "seq",
    ]
    list_filter = ["action", "actor_org", ("occurred_at", admin.DateFieldListFilter)]
    search_fields = ["action", "object_id", "request_id", "actor_key_id", "actor_username"]
    date_hierarchy = "occurred_at"
    list_select_related = ["actor_org", "owner_org", "seal"]
    show_full_result_count = False
    change_list_template = "admin/audit/auditevent/change_list.html"

    @admin.display(description="actor")
    def actor(self, event: AuditEvent) -> str:
        if event.actor_org_id:
            return (
                f"{event.actor_org} ({event.actor_key_id[:10]}…)"
                if event.actor_key_id
                else str(event.actor_org)
            )
        return f"staff: {event.actor_username}" if event.actor_username else "system"

    @admin.display(description="seq")
    def seq(self, event: AuditEvent) -> int | None:
        seal = getattr(event, "seal", None)
        return seal.seq if seal else None

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "export/",
                self.admin_site.admin_view(self.export_view),
                name="audit_auditevent_export",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        """Pick a time range, download it as NDJSON (streamed)."""
        form = ExportForm(request.GET or None)
        if request.GET and form.is_valid():
            since: datetime | None = form.cleaned_data["since"]
            until: datetime | None = form.cleaned_data["until"]
            record(
                "audit.exported",
                request=request,
                details={"since": str(since), "until": str(until)},
            )
            response = StreamingHttpResponse(
                iter_ndjson(since, until), content_type="application/x-ndjson"
            )
            response["Content-Disposition"] = 'attachment; filename="audit-events.ndjson"'
            return response
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Export audit events",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/audit/export.html", context)


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    list_display = ["id", "issued_at", "tree_size", "head_hash", "kid", "signature_valid"]
    change_list_template = "admin/audit/auditcheckpoint/change_list.html"

    @admin.display(boolean=True, description="signature verifies")
    def signature_valid(self, cp: AuditCheckpoint) -> bool:
        return verify_checkpoint_signature(cp)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "sign/",
                self.admin_site.admin_view(self.sign_view),
                name="audit_auditcheckpoint_sign",
            ),
            *super().get_urls(),
        ]

    def sign_view(self, request: HttpRequest) -> HttpResponse:
        """Confirm, then seal pending events and sign a checkpoint now."""
        if request.method == "POST":
            sealed = do_seal_pending(wait=True).sealed
            cp = do_sign_checkpoint()
            assert cp is not None
            record(
                "audit.checkpoint.signed",
                obj=cp,
                request=request,
                details={"tree_size": cp.tree_size},
            )
            messages.success(
                request, f"Sealed {sealed} events; signed checkpoint at tree size {cp.tree_size}."
            )
            return HttpResponseRedirect(reverse("admin:audit_auditcheckpoint_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Sign an audit checkpoint now?",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/audit/sign_confirm.html", context)
