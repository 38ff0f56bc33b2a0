"""Server-rendered pages: what the registry knows, for people. Thin: selectors read, the
statistics module words the comparison, and a stop goes through the same service as the API.

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


def _accuracy(requests: int, feedback: int, correct: int) -> dict:
    interval = ab_statistics.wilson_interval(correct, feedback)
    return {"requests": requests, "feedback": feedback, "correct": correct,
            "accuracy": correct / feedback if feedback else None,
            "ci95": list(interval) if interval else None}


def home(request):
    rows = selectors.endpoint_overview()
    for row in rows:
        if row["production"]:
            row["live"] = _accuracy(*row["counts"])
    return render(request, "web/home.html", {"rows": rows})


def _ab_test(pk: int) -> ABTest:
    try:
        return selectors.ab_test_list().get(pk=pk)
    except ABTest.DoesNotExist:
        raise Http404(f"no A/B test {pk}") from None


def ab_test_figures(ab_test: ABTest) -> dict:
    """Everything the A/B test page shows, as data: its HTML and its refreshes use this."""
    results = selectors.ab_test_results(ab_test)
    names = {m["mlmodel"]: f"{m['name']} {m['version']}" for m in results["models"]}
    running = ab_test.ended_at is None
    outcomes = selectors.feedback_outcomes(ab_test=ab_test)
    return {
        "id": ab_test.pk, "state": "running" if running else "stopped",
        "models": [{**m, "label": names[m["mlmodel"]]} for m in results["models"]],
        "comparisons": [ab_statistics.comparison_sentence(c, names, running=running)
                        for c in results["comparisons"]],
        "series": [{"mlmodel": m["mlmodel"], "label": names[m["mlmodel"]],
                    "points": ab_statistics.cumulative_accuracy(outcomes.get(m["mlmodel"], []))}
                   for m in results["models"]],
    }


def ab_test_page(request, pk: int):
    ab_test = _ab_test(pk)
    return render(request, "web/abtest.html", {
        "ab_test": ab_test, "figures": ab_test_figures(ab_test),
        "decision": ab_test.summary.splitlines() if ab_test.ended_at else [],
        "can_stop": request.user.is_staff and ab_test.ended_at is None,
    })


def ab_test_data(request, pk: int):
    return JsonResponse(ab_test_figures(_ab_test(pk)))


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
        promoted = stopped.results["promoted"]
        name = next(m["name"] + " " + m["version"] for m in stopped.results["models"]
                    if m["mlmodel"] == promoted)
        messages.success(request, f"A/B test stopped: {name} is in production")
    return redirect("web:abtest", pk=pk)


def model_figures(mlmodel: MLModel) -> dict:
    days = selectors.model_days(mlmodel)
    return {"id": mlmodel.pk, "days": [
        {"day": d["day"].isoformat(), "requests": d["n_requests"], "feedback": d["n_feedback"],
         "accuracy": d["n_correct"] / d["n_feedback"] if d["n_feedback"] else None}
        for d in days]}


def model_page(request, pk: int):
    mlmodel = get_object_or_404(selectors.mlmodel_list(), pk=pk)
    live = _accuracy(*selectors.live_counts([mlmodel.pk]).get(mlmodel.pk, (0, 0, 0)))
    return render(request, "web/model.html", {
        "mlmodel": mlmodel, "live": live, "figures": model_figures(mlmodel),
        "history": mlmodel.statuses.order_by("-id"),
        "metrics": sorted(mlmodel.metrics.items()),
    })


def model_data(request, pk: int):
    return JsonResponse(model_figures(get_object_or_404(MLModel, pk=pk)))
