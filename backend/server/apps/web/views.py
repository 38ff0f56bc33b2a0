"""Server-rendered pages: what the registry knows, for people. Thin: selectors read, figures.py
puts the figures together, and a stop goes through the same service as the API.

Every figure is in the HTML; JavaScript only draws the charts and, while a test runs, refreshes
the figures from the page's own JSON (``.../data``).
"""
from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.endpoints import ab_statistics, selectors, services
from apps.endpoints.exceptions import RegistryError
from apps.endpoints.models import ABTest, MLModel
from apps.web import figures


def home(request):
    rows = selectors.endpoint_overview()
    for row in rows:
        if row["production"]:
            row["live"] = ab_statistics.accuracy(*row["counts"])
    return render(request, "web/home.html", {"rows": rows})


def _ab_test(pk: int) -> ABTest:
    try:
        return selectors.ab_test_list().get(pk=pk)
    except ABTest.DoesNotExist:
        raise Http404(f"no A/B test {pk}") from None


def ab_test_page(request, pk: int):
    ab_test = _ab_test(pk)
    return render(request, "web/abtest.html", {
        "ab_test": ab_test, "figures": figures.ab_test_figures(ab_test),
        "decision": ab_test.summary.splitlines() if ab_test.ended_at else [],
        "can_stop": request.user.is_staff and ab_test.ended_at is None,
    })


def ab_test_data(request, pk: int):
    return JsonResponse(figures.ab_test_figures(_ab_test(pk)))


@require_POST
def ab_test_stop(request, pk: int):
    """The page's Stop button: staff only, through the service the API's stop uses."""
    if not request.user.is_staff:
        return HttpResponseForbidden("stopping a test needs a staff user\n")
    try:
        stopped = services.ab_test_stop(ab_test_id=pk, stopped_by=request.user.get_username())
    except RegistryError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, figures.stop_message(stopped))
    return redirect("web:abtest", pk=pk)


def model_page(request, pk: int):
    mlmodel = get_object_or_404(selectors.mlmodel_list(), pk=pk)
    counts = selectors.live_counts([mlmodel.pk]).get(mlmodel.pk, (0, 0, 0))
    live = ab_statistics.accuracy(*counts)
    return render(request, "web/model.html", {
        "mlmodel": mlmodel, "live": live, "figures": figures.model_figures(mlmodel),
        "shadow": selectors.shadow_results(mlmodel),
        "drift": figures.drift(mlmodel),
        "history": mlmodel.statuses.order_by("-id"),
        "metrics": sorted(mlmodel.metrics.items()),
    })


def model_data(request, pk: int):
    return JsonResponse(figures.model_figures(get_object_or_404(MLModel, pk=pk)))
