from django.urls import path

from ops.api import views

urlpatterns = [
    path("stats", views.StatsView.as_view(), name="stats"),
]
