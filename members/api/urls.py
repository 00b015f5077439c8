from django.urls import path

from members.api import views

urlpatterns = [
    path("whoami", views.WhoamiView.as_view(), name="whoami"),
    path("keys", views.KeyListView.as_view(), name="keys"),
    path("keys/challenge", views.KeyChallengeView.as_view(), name="keys-challenge"),
    path("keys/<str:key_id>/revoke", views.KeyRevokeView.as_view(), name="keys-revoke"),
    path("keys/<str:key_id>/retire", views.KeyRetireView.as_view(), name="keys-retire"),
]
