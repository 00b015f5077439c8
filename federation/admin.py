"""Peers in Django admin: state, lag, last error and what each mirrors; pause and resume
(audited, with a reason)."""

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone

from exchange.admin_tools import ReadOnlyAdmin, confirm_with_reason
from exchange.problems import Problem
from federation.actions.peering import do_add_peer, do_remove_peer, do_set_peer_state
from federation.actions.status import lag_seconds
from federation.models import MirroredSet, Peer


class MirroredSetInline(admin.TabularInline):
    model = MirroredSet
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "remote_slug", "hash_set", "applied", "refused", "resyncs", "last_pulled_at",
    )  # fmt: skip

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AddPeerForm(forms.Form):
    name = forms.SlugField(max_length=40, help_text="short name for the peer, e.g. eu-exchange")
    url = forms.URLField(max_length=500, assume_scheme="https", help_text="its base URL")
    fingerprint = forms.CharField(max_length=60, help_text="SHA256:… as its staff gave it")


# Active entries of the peer's mirrors that the peer serves (a mirror reached through two
# peers counts, for each, what that one serves; one mirrored before paths were kept, all).
_SQL_SERVED = """(SELECT count(*) FROM signals_setentry e
    JOIN federation_mirroredset m ON m.hash_set_id = e.hash_set_id
    WHERE m.peer_id = federation_peer.id AND e.state = 'active'
      AND (federation_peer.exchange_id::varchar = ANY(e.via) OR e.via = '{}'))"""


@admin.register(Peer)
class PeerAdmin(ReadOnlyAdmin):
    """Staff add peers (as ``manage.py add_peer`` does: the key must match the fingerprint),
    watch them, pause, resume and remove them."""

    list_display = [
        "name", "url", "state", "lag_seconds", "last_applied", "entries_mirrored", "failures",
        "last_error", "last_success_at", "next_attempt_at",
    ]  # fmt: skip
    list_filter = ["state"]
    search_fields = ["name", "url", "exchange_id"]
    readonly_fields = [
        "name", "url", "exchange_id", "organisation", "fingerprint", "state", "last_error",
        "failures", "last_attempt_at", "last_success_at", "next_attempt_at", "last_applied",
        "opinions_cursor", "created_at",
    ]  # fmt: skip
    exclude = ["public_key", "key_id"]
    inlines = [MirroredSetInline]
    actions = ["pause", "resume", "remove_dropping_mirrors", "remove_keeping_mirrors"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> Any:
        form = AddPeerForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                peer = do_add_peer(**form.cleaned_data, actor=request.user)
            except Problem as exc:
                form.add_error(None, str(exc.detail))
            else:
                self.message_user(request, f"Peer {peer.name} added: {peer.fingerprint} pinned.")
                return redirect("admin:federation_peer_change", peer.pk)
        context = {**self.admin_site.each_context(request), "title": "Add a peer exchange",
                   "form": form, "opts": self.model._meta}  # fmt: skip
        return TemplateResponse(request, "admin/federation/add_peer.html", context)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Peer]:
        served = RawSQL(_SQL_SERVED, [])  # noqa: S611 - constant SQL
        return super().get_queryset(request).annotate(mirrored=served)

    @admin.display(description="entries mirrored", ordering="mirrored")
    def entries_mirrored(self, peer: Any) -> int:
        return int(peer.mirrored)

    @admin.display(description="lag (s)")
    def lag_seconds(self, peer: Peer) -> str:
        """Seconds since the last complete pull began (what may not have arrived yet)."""
        lag = f"{lag_seconds(peer, timezone.now()):.0f}"
        return lag if peer.last_success_at is not None else f"{lag} (never pulled)"

    @admin.action(description="Pause pulling from the selected peers")
    def pause(self, request: HttpRequest, queryset: QuerySet[Peer]) -> Any:
        return self._set_state(request, queryset, Peer.State.PAUSED, "pause", "Pause pulling")

    @admin.action(description="Resume pulling from the selected peers (clears the error)")
    def resume(self, request: HttpRequest, queryset: QuerySet[Peer]) -> Any:
        return self._set_state(request, queryset, Peer.State.ACTIVE, "resume", "Resume pulling")

    def _set_state(
        self, request: HttpRequest, queryset: QuerySet[Peer], state: str, action: str, title: str
    ) -> Any:
        def apply(peer: Peer, reason: str) -> bool:
            return do_set_peer_state(peer, state, actor=request.user, reason=reason)

        return confirm_with_reason(self, request, queryset, action=action, title=title, apply=apply)

    @admin.action(description="Remove the selected peers and drop their mirrored entries")
    def remove_dropping_mirrors(self, request: HttpRequest, queryset: QuerySet[Peer]) -> Any:
        return self._remove(request, queryset, drop=True)

    @admin.action(description="Remove the selected peers and keep their mirrors (frozen)")
    def remove_keeping_mirrors(self, request: HttpRequest, queryset: QuerySet[Peer]) -> Any:
        return self._remove(request, queryset, drop=False)

    def _remove(self, request: HttpRequest, queryset: QuerySet[Peer], *, drop: bool) -> Any:
        def apply(peer: Peer, reason: str) -> bool:
            do_remove_peer(peer, drop_mirrors=drop, actor=request.user, reason=reason)
            return True

        action = "remove_dropping_mirrors" if drop else "remove_keeping_mirrors"
        title = "Remove peers, dropping" if drop else "Remove peers, keeping"
        return confirm_with_reason(
            self, request, queryset, action=action, title=f"{title} their mirrors", apply=apply
        )
