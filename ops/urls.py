"""The staff dashboard, under /admin/ops/ (exchange/urls.py): staff only, through the admin's
own login and permission check."""

from django.contrib import admin
from django.urls import path

from ops import views

urlpatterns = [
    path("", admin.site.admin_view(views.dashboard), name="ops-dashboard"),
    path("members/<slug:slug>", admin.site.admin_view(views.member), name="ops-member"),
]
