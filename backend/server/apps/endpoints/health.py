"""Liveness and readiness, for the Dockerfile's HEALTHCHECK, compose and the load balancer.

``/health/live``: the process answers. ``/health/ready``: the database answers and every model
that can be asked for predictions loads in this process (which also warms the worker up).
"""
from django.db.utils import OperationalError
from django.http import JsonResponse

from apps.endpoints import selectors
from apps.endpoints.exceptions import Unavailable
from apps.endpoints.registry import registry


def live(request):
    return JsonResponse({"status": "ok"})


def ready(request):
    problems = []
    models = []
    try:  # the query for the serving models is also the database's check
        models = list(selectors.serving_models())
    except OperationalError as exc:
        problems.append(f"database: {exc}")
    for mlmodel in models:
        try:
            registry.get(mlmodel)
        except Unavailable as exc:
            problems.append(exc.detail)
    if problems:
        return JsonResponse({"status": "unavailable", "problems": problems}, status=503)
    return JsonResponse({"status": "ok", "models": len(models)})
