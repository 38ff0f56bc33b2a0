from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.endpoints import exceptions, health, metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("api/v1/", include("apps.endpoints.urls")),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(
        url_name="schema", http_method_names=["get", "head"]), name="docs"),
    path("api-auth/", include("rest_framework.urls")),
    path("", include("apps.web.urls")),
    # Any other path under /api/ is a JSON 404, with DEBUG on too (Django's page is HTML).
    re_path(r"^api/", exceptions.api_not_found),
]

# Outside a view (middleware, an unknown URL): JSON under /api/, Django's own pages elsewhere.
handler400 = exceptions.handler400
handler500 = exceptions.handler500
