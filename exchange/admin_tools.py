"""Pieces shared by the apps' admin modules."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records nobody edits by hand: staff look, filter and search."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), help_text="Recorded in the audit log."
    )


def confirm_with_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    apply: Any,
) -> HttpResponse | None:
    """Django's intermediate-page pattern: show the objects and ask for a reason; on the
    confirming POST, apply the change to each and report."""
    form = ReasonForm(request.POST if "confirm" in request.POST else None)
    if "confirm" in request.POST and form.is_valid():
        changed = sum(1 for obj in queryset if apply(obj, form.cleaned_data["reason"]))
        skipped = queryset.count() - changed
        modeladmin.message_user(
            request, f"{title}: {changed} changed, {skipped} left as they were.", messages.SUCCESS
        )
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"{title}?",
        "objects": queryset,
        "form": form,
        "action": action,
        "opts": modeladmin.model._meta,
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
    }
    return TemplateResponse(request, "admin/members/confirm_action.html", context)
