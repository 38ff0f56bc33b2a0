from django.urls import re_path
from rest_framework.routers import DefaultRouter

from apps.endpoints import views
from apps.webhooks.views import SubscriberViewSet


class OptionalSlashRouter(DefaultRouter):
    """Paths as the tutorial's users know them (no trailing slash); a trailing slash works too."""

    # No format suffixes (``/mlmodels.json``): the actions do not take them, and ``?format=``
    # chooses a renderer as well.
    include_format_suffixes = False

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("endpoints", views.EndpointViewSet, basename="endpoint")
router.register("mlmodels", views.MLModelViewSet, basename="mlmodel")
router.register("mlmodelstatuses", views.MLModelStatusViewSet, basename="mlmodelstatus")
router.register("mlrequests", views.MLRequestViewSet, basename="mlrequest")
router.register("abtests", views.ABTestViewSet, basename="abtest")
router.register("subscribers", SubscriberViewSet, basename="subscriber")

urlpatterns = [
    re_path(r"^(?P<endpoint_name>[-\w]+)/predict/?$", views.PredictView.as_view(), name="predict"),
    re_path(r"^stop_ab_test/(?P<ab_test_id>[0-9]{1,19})/?$", views.StopABTestView.as_view(),
            name="stop-ab-test"),
    *router.urls,
]
