from django.urls import path

from federation.api import views

urlpatterns = [
    path("push/<str:exchange_id>", views.PushView.as_view(), name="federation-push"),
]
