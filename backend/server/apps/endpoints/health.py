"""Liveness and readiness, for the Dockerfile's HEALTHCHECK, compose and the load balancer.

``/health/live``: the process answers. ``/health/ready``: the database answers and every model
answering production traffic loads in this process (which also warms the worker up). A broken
model in another status (testing, staging, an A/B arm that is not the incumbent) does not take
the replica out of rotation: it is reported and ready stays 200, since production still serves.

Anonymous callers (a load balancer) learn ready or not and which models fail; why they fail
(paths, checksums, the driver's message) needs an API token or a staff session. The registry
logs each failed load as well.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.db import DatabaseError
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, permission_classes, renderer_classes
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer

from apps.endpoints import selectors
from apps.endpoints.exceptions import Unavailable
from apps.endpoints.permissions import is_trusted
from apps.endpoints.registry import registry


@dataclass
class Readiness:
    models: int = 0
    failing: list[dict] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    database_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.database_error is None and not any(m["serves_production"]
                                                       for m in self.failing)

    @property
    def status(self) -> str:
        return "unavailable" if not self.ready else "degraded" if self.failing else "ok"


def readiness() -> Readiness:
    """Load every serving model in this process, and say which cannot serve."""
    try:  # the query for the serving models is also the database's check
        models = selectors.serving_models_with_role()
    except DatabaseError as exc:
        return Readiness(database_error=f"database: {type(exc).__name__}: {exc}")
    result = Readiness(models=len(models))
    for mlmodel, serves_production in models:
        try:
            registry.get(mlmodel)
        except Unavailable as exc:
            result.failing.append({"id": mlmodel.pk, "name": mlmodel.name,
                                   "version": mlmodel.version,
                                   "serves_production": serves_production})
            result.details.append(exc.log_detail)
    return result


def live(request):
    return JsonResponse({"status": "ok"})


@extend_schema(exclude=True)  # an operations URL, not part of the API
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JSONRenderer])
def ready(request):
    state = readiness()
    if state.database_error:
        body = {"status": state.status, "database": "unavailable"}
        details = [state.database_error]
    else:
        body = {"status": state.status, "models": state.models, "failing": state.failing}
        details = state.details
    if details and is_trusted(request):
        body["details"] = details
    return JsonResponse(body, status=200 if state.ready else 503)
