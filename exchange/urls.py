from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from exchange.api import views
from exchange.api.metrics import metrics_view
from exchange.problems import api_not_found

api_v1: list[URLPattern | URLResolver] = [
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("members.api.urls")),
    path("", include("signals.api.urls")),
    path("", include("audit.api.urls")),
    path("", include("taxii.api.tokens_urls")),
    path("", include("ops.api.urls")),
]

urlpatterns = [
    path("", views.LandingView.as_view(), name="landing"),
    path("healthz", views.HealthzView.as_view(), name="healthz"),
    path("readyz", views.ReadyzView.as_view(), name="readyz"),
    path(".well-known/hashx", views.WellKnownView.as_view(), name="well-known"),
    path("problems/<str:slug>", views.ProblemTypeView.as_view(), name="problem-type"),
    path("metrics", metrics_view, name="metrics"),
    # The staff dashboard (ops/urls.py), before the admin's catch-all.
    path("admin/ops/", include("ops.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("taxii2/", include("taxii.api.urls")),
    path("feeds/misp/", include("taxii.api.misp_urls")),
    # Signed by a peer exchange's key (webhooks), not by a member's: outside the member API.
    path("federation/", include("federation.api.urls")),
    # Anything else under /api/ is a problem document 404, never an HTML page.
    re_path(r"^api/", api_not_found),
]

# Every error is a problem document, whatever the path (exchange/problems.py).
handler400 = "exchange.problems.bad_request"
handler403 = "exchange.problems.permission_denied"
handler404 = "exchange.problems.page_not_found"
handler500 = "exchange.problems.server_error"
