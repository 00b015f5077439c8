from django.urls import path

from audit.api import views

urlpatterns = [
    path("audit/events", views.AuditEventList.as_view(), name="audit-events"),
    path("audit/checkpoint", views.CheckpointView.as_view(), name="audit-checkpoint"),
]
