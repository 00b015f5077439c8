"""Membership in Django admin: the coalition staff's main tool.

Status changes and key revocations go through the member actions (confirmation page, reason,
audit event); keys are added by pasting a PEM, raw base64 or JWK public key.
"""

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from audit.admin import AuditedAdminMixin
from exchange import generation
from exchange.admin_tools import confirm_with_reason
from hashx.keys import KeyFormatError, jwk_thumbprint, parse_public_key
from members.actions.keys import do_add_key, do_revoke_key
from members.actions.organisations import do_change_status
from members.actions.tokens import do_revoke_feed_token
from members.models import FeedToken, Organisation, SigningKey


class KeyAddForm(forms.ModelForm):
    public_key_text = forms.CharField(
        label="Public key",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Ed25519 public key as PEM, raw base64 (32 bytes) or JWK.",
    )

    class Meta:
        model = SigningKey
        fields = ["label", "read_only"]

    def clean_public_key_text(self) -> bytes:
        try:
            raw = parse_public_key(self.cleaned_data["public_key_text"])
        except KeyFormatError as exc:
            raise forms.ValidationError(str(exc)) from None
        if SigningKey.objects.filter(key_id=jwk_thumbprint(raw)).exists():
            raise forms.ValidationError("This key is already registered.")
        return raw


class SigningKeyInline(admin.TabularInline):
    """The organisation's keys, read-only: revoke them from the key list (with a reason)."""

    model = SigningKey
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "key_id", "label", "state", "read_only", "last_used_at", "not_after", "revoked_reason",
    )  # fmt: skip
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AddKeyInline(admin.TabularInline):
    """Paste a public key to add it (goes through do_add_key, so it is audited)."""

    model = SigningKey
    form = KeyAddForm
    extra = 1
    can_delete = False
    verbose_name = "new key"
    verbose_name_plural = "add keys"
    fields = ["public_key_text", "label", "read_only"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[SigningKey]:
        return SigningKey.objects.none()


@admin.register(Organisation)
class OrganisationAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["slug", "name", "kind", "status", "active_keys", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["slug", "name", "contact_email", "contact_name"]
    readonly_fields = ["status", "created_at", "updated_at"]
    inlines = [SigningKeyInline, AddKeyInline]
    actions = ["approve", "suspend", "reactivate"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A member's slug names it in feeds, webhooks and its entries' contributors
        # (SetEntry.contributor_names): fixed once the organisation exists.
        return [*self.readonly_fields, "slug"] if obj is not None else list(self.readonly_fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organisation]:
        return (
            super()
            .get_queryset(request)
            .annotate(n_active_keys=Count("keys", filter=Q(keys__state=SigningKey.State.ACTIVE)))
            # An aggregate drops Meta.ordering: pages (the admin's, its autocomplete's) need one.
            .order_by("slug")
        )

    @admin.display(description="active keys", ordering="n_active_keys")
    def active_keys(self, org: Organisation) -> int:
        return org.n_active_keys  # type: ignore[attr-defined]

    def save_model(self, request: HttpRequest, obj: Organisation, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # Requests act as the organisation as it is now (its name, its kind).
        generation.invalidate_on_commit()

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not SigningKey:
            return super().save_formset(request, form, formset, change)
        # Keys are only ever added here, through the audited action; the admin's change
        # message reads what was added from these attributes.
        formset.new_objects = [
            do_add_key(
                form.instance,
                key_form.cleaned_data["public_key_text"],
                label=key_form.cleaned_data.get("label", ""),
                read_only=key_form.cleaned_data.get("read_only", False),
                actor_user=request.user,
                request=request,
            )
            for key_form in formset.forms
            if key_form.has_changed() and "public_key_text" in key_form.cleaned_data
        ]
        formset.changed_objects, formset.deleted_objects = [], []
        return None

    def _status_action(
        self, request: HttpRequest, queryset: QuerySet[Organisation], action: str, title: str
    ) -> Any:
        def apply(org: Organisation, reason: str) -> bool:
            return do_change_status(org, action, reason, actor=request.user, request=request)

        return confirm_with_reason(self, request, queryset, action=action, title=title, apply=apply)

    @admin.action(description="Approve selected organisations")
    def approve(self, request: HttpRequest, queryset: QuerySet[Organisation]) -> Any:
        return self._status_action(request, queryset, "approve", "Approve organisations")

    @admin.action(description="Suspend selected organisations")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Organisation]) -> Any:
        return self._status_action(request, queryset, "suspend", "Suspend organisations")

    @admin.action(description="Reactivate selected organisations")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[Organisation]) -> Any:
        return self._status_action(request, queryset, "reactivate", "Reactivate organisations")


@admin.register(SigningKey)
class SigningKeyAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = [
        "key_id",
        "organisation",
        "label",
        "state",
        "read_only",
        "last_used_at",
        "created_at",
    ]
    list_filter = ["state", "read_only"]
    search_fields = ["key_id", "label", "organisation__slug", "organisation__name"]
    list_select_related = ["organisation"]
    readonly_fields = [
        "organisation", "key_id", "state", "created_at", "last_used_at", "not_after", "revoked_at",
        "revoked_reason",
    ]  # fmt: skip
    fields = ["organisation", "key_id", "label", "read_only", *readonly_fields[2:]]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are added on their organisation's page

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the audit log keeps referring to the key

    def save_model(self, request: HttpRequest, obj: SigningKey, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        generation.invalidate_on_commit()  # read_only holds from the next request

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[SigningKey]) -> Any:
        return confirm_with_reason(
            self, request, queryset, action="revoke", title="Revoke keys",
            apply=lambda key, reason: key.state != SigningKey.State.REVOKED
            and bool(do_revoke_key(key, reason, actor_user=request.user, request=request)),
        )  # fmt: skip


@admin.register(FeedToken)
class FeedTokenAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Members' read-only feed tokens: staff see them (never their secrets, which the exchange
    does not keep) and revoke them with a reason."""

    list_display = ["name", "hint", "organisation", "expires_at", "revoked_at", "last_used_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "hint", "organisation__slug", "organisation__name"]
    list_select_related = ["organisation"]
    fields = readonly_fields = (
        "id", "organisation", "name", "hint", "set_ids", "created_at", "expires_at", "revoked_at",
        "last_used_at",
    )  # fmt: skip
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # members make tokens with a signed request: only they see the secret

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the audit log keeps referring to the token

    @admin.action(description="Revoke selected feed tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[FeedToken]) -> Any:
        return confirm_with_reason(
            self, request, queryset, action="revoke", title="Revoke feed tokens",
            apply=lambda token, reason: token.revoked_at is None
            and bool(do_revoke_feed_token(token, request=request, reason=reason)),
        )  # fmt: skip
