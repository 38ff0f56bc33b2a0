"""Liveness and readiness, for the Dockerfile's HEALTHCHECK, compose and the load balancer.

``/health/live``: the process answers. ``/health/ready``: the database answers and every model
answering production traffic loads in this process (which also warms the worker up). A broken
model in another status (testing, staging, an A/B arm that is not the incumbent) does not take
the replica out of rotation: it is reported and ready stays 200, since production still serves.

Anonymous callers (a load balancer) learn ready or not and which models fail; why they fail
(paths, checksums, the driver's message) needs an API token or a staff session.
"""
from django.db import DatabaseError
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.authtoken.models import Token
from rest_framework.decorators import api_view, permission_classes, renderer_classes
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer

from apps.endpoints import selectors
from apps.endpoints.exceptions import Unavailable
from apps.endpoints.registry import registry


def live(request):
    return JsonResponse({"status": "ok"})


@extend_schema(exclude=True)  # an operations URL, not part of the API
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JSONRenderer])
def ready(request):
    may_see_details = isinstance(request.auth, Token) or request.user.is_staff
    try:  # the query for the serving models is also the database's check
        models = selectors.serving_models_with_role()
    except DatabaseError as exc:
        body = {"status": "unavailable", "database": "unavailable"}
        if may_see_details:
            body["details"] = [f"database: {type(exc).__name__}: {exc}"]
        return JsonResponse(body, status=503)
    failing, details, production_fails = [], [], False
    for mlmodel, serves_production in models:
        try:
            registry.get(mlmodel)
        except Unavailable as exc:
            failing.append({"id": mlmodel.pk, "name": mlmodel.name, "version": mlmodel.version,
                            "serves_production": serves_production})
            details.append(exc.log_detail)
            production_fails |= serves_production
    status = "unavailable" if production_fails else "degraded" if failing else "ok"
    body = {"status": status, "models": len(models), "failing": failing}
    if may_see_details and details:
        body["details"] = details
    return JsonResponse(body, status=503 if production_fails else 200)
