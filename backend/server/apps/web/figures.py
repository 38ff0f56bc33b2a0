"""What the pages show, as data: the HTML renders it and the pages' refreshes fetch it as JSON.
Plain functions over selectors and the statistics module, testable without HTTP."""
from __future__ import annotations

from apps.endpoints import ab_statistics, selectors
from apps.endpoints.models import ABTest, MLModel


def accuracy(requests: int, feedback: int, correct: int) -> dict:
    """Live accuracy over a model's requests with feedback, with its 95% Wilson interval."""
    interval = ab_statistics.wilson_interval(correct, feedback)
    return {"requests": requests, "feedback": feedback, "correct": correct,
            "accuracy": correct / feedback if feedback else None,
            "ci95": list(interval) if interval else None}


def ab_test_figures(ab_test: ABTest) -> dict:
    """Everything the A/B test page shows, as data: its HTML and its refreshes use this."""
    results = selectors.ab_test_results(ab_test)
    names = {m["mlmodel"]: f"{m['name']} {m['version']}" for m in results["models"]}
    running = ab_test.ended_at is None
    outcomes = selectors.feedback_outcomes(ab_test)
    return {
        "id": ab_test.pk, "state": "running" if running else "stopped",
        "models": [{**m, "label": names[m["mlmodel"]]} for m in results["models"]],
        "comparisons": [ab_statistics.comparison_sentence(c, names, running=running)
                        for c in results["comparisons"]],
        "series": [{"mlmodel": m["mlmodel"], "label": names[m["mlmodel"]],
                    "points": ab_statistics.cumulative_accuracy(outcomes.get(m["mlmodel"], []))}
                   for m in results["models"]],
    }


def model_figures(mlmodel: MLModel) -> dict:
    days = selectors.model_days(mlmodel)
    return {"id": mlmodel.pk, "days": [
        {"day": d["day"].isoformat(), "requests": d["n_requests"], "feedback": d["n_feedback"],
         "accuracy": d["n_correct"] / d["n_feedback"] if d["n_feedback"] else None}
        for d in days]}


def promoted(ab_test: ABTest) -> str:
    """The name and version of the model a stopped test promoted."""
    winner = ab_test.results["promoted"]
    return next(f"{m['name']} {m['version']}" for m in ab_test.results["models"]
                if m["mlmodel"] == winner)
