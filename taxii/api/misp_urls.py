from django.urls import path

from taxii.api import misp

urlpatterns = [
    path("<slug:slug>/manifest.json", misp.ManifestView.as_view(), name="misp-manifest"),
    path("<slug:slug>/hashes.csv", misp.HashesView.as_view(), name="misp-hashes"),
    path("<slug:slug>/<str:event>.json", misp.EventView.as_view(), name="misp-event"),
]
