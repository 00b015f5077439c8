from django.urls import path, re_path

from taxii.api import views

ROOT = f"{views.API_ROOT}/"
COLLECTION = f"{ROOT}collections/<str:collection_id>/"

urlpatterns = [
    path("", views.DiscoveryView.as_view(), name="taxii-discovery"),
    path(ROOT, views.ApiRootView.as_view(), name="taxii-root"),
    path(f"{ROOT}collections/", views.CollectionsView.as_view(), name="taxii-collections"),
    path(COLLECTION, views.CollectionView.as_view(), name="taxii-collection"),
    path(f"{COLLECTION}objects/", views.ObjectsView.as_view(), name="taxii-objects"),
    path(f"{COLLECTION}manifest/", views.ManifestView.as_view(), name="taxii-manifest"),
    path(f"{COLLECTION}objects/<str:object_id>/", views.ObjectView.as_view(), name="taxii-object"),
    path(
        f"{COLLECTION}objects/<str:object_id>/versions/",
        views.VersionsView.as_view(),
        name="taxii-versions",
    ),
    re_path(r"^(?P<rest>.*)$", views.NotFoundView.as_view()),
]
