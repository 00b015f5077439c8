from django.urls import path

from signals.api import views

urlpatterns = [
    path("sets", views.SetListView.as_view(), name="sets"),
    path("sets/<slug:slug>", views.SetDetailView.as_view(), name="set"),
    path("sets/<slug:slug>/grants", views.GrantListView.as_view(), name="set-grants"),
    path("sets/<slug:slug>/grants/<slug:org_slug>", views.GrantView.as_view(), name="set-grant"),
    path("sets/<slug:slug>/signals", views.PublishView.as_view(), name="set-publish"),
    path("sets/<slug:slug>/retractions", views.RetractView.as_view(), name="set-retract"),
    path("sets/<slug:slug>/opinions", views.OpinionView.as_view(), name="set-opinions"),
    path("sets/<slug:slug>/snapshot", views.SnapshotView.as_view(), name="set-snapshot"),
    path("batches", views.BatchListView.as_view(), name="batches"),
    path("batches/<str:batch_id>", views.BatchView.as_view(), name="batch"),
    path("changes", views.ChangesView.as_view(), name="changes"),
    path("subscriptions", views.SubscriptionListView.as_view(), name="subscriptions"),
    path(
        "subscriptions/<str:subscription_id>",
        views.SubscriptionDetailView.as_view(),
        name="subscription",
    ),
    path(
        "subscriptions/<str:subscription_id>/deliveries",
        views.DeliveryListView.as_view(),
        name="subscription-deliveries",
    ),
    path(
        "subscriptions/<str:subscription_id>/redeliver",
        views.RedeliverView.as_view(),
        name="subscription-redeliver",
    ),
    path("match", views.MatchView.as_view(), name="match"),
]
