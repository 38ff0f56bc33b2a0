"""What the pages show, as data: the HTML renders it and the pages' refreshes fetch it as JSON.
Plain functions over selectors and the statistics module, testable without HTTP."""
from __future__ import annotations

from django.conf import settings

from apps.endpoints import ab_statistics, selectors
from apps.endpoints.exceptions import Conflict
from apps.endpoints.models import ABTest, MLModel


def ab_test_figures(ab_test: ABTest) -> dict:
    """Everything the A/B test page shows, as data: its HTML and its refreshes use this."""
    results = selectors.ab_test_results(ab_test)
    names = {m["mlmodel"]: f"{m['name']} {m['version']}" for m in results["models"]}
    shares = {arm.mlmodel_id: arm.share for arm in ab_test.arms.all()}
    running = ab_test.ended_at is None
    outcomes = selectors.feedback_outcomes(ab_test)
    decision = results.get("decision")  # tests stopped before issue 11 have none
    return {
        "id": ab_test.pk, "state": "running" if running else "stopped",
        "models": [{**m, "label": names[m["mlmodel"]], "share": shares.get(m["mlmodel"])}
                   for m in results["models"]],
        "decision": decision["reason"] if decision else "",
        "comparisons": [ab_statistics.comparison_sentence(c, names, running=running)
                        for c in results["comparisons"]],
        "series": [{"mlmodel": m["mlmodel"], "label": names[m["mlmodel"]],
                    "points": ab_statistics.cumulative_accuracy(outcomes.get(m["mlmodel"], []))}
                   for m in results["models"]],
    }


def drift(mlmodel: MLModel) -> dict:
    """The model's drift over its last DRIFT_WINDOW requests (``selectors.model_drift``); when
    it cannot be computed (no training profile), why, as ``problem``."""
    try:
        return selectors.model_drift(mlmodel, last=settings.DRIFT_WINDOW)
    except Conflict as exc:
        return {"problem": exc.detail}


def model_figures(mlmodel: MLModel) -> dict:
    days = selectors.model_days(mlmodel)
    return {"id": mlmodel.pk, "days": [
        {"day": d["day"].isoformat(), "requests": d["n_requests"], "feedback": d["n_feedback"],
         "accuracy": d["n_correct"] / d["n_feedback"] if d["n_feedback"] else None}
        for d in days]}


def stop_message(ab_test: ABTest) -> str:
    """What a stop decided, in words: the test's policy applied to its figures."""
    return f"A/B test stopped: {ab_test.results['decision']['reason']}"
