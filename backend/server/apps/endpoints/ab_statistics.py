"""A/B test statistics: plain functions over counts, no database and no HTTP.

Per model: accuracy over the requests that received feedback, with a 95% Wilson score interval
(it stays inside [0, 1] and behaves at small counts, where the textbook Wald interval does not).
Between the leader and each other model: the difference in accuracy with a 95% (unpooled Wald)
interval, and a two-sided p-value from the pooled two-proportion z-test, the standard test for
"are these two accuracies different?". With more than two models the leader is compared with
each of the others; those p-values are not corrected for multiple comparisons.

The winner is the model with the highest accuracy. Equal accuracies are a tie, decided by a fixed
rule: the model that was in production when the test started keeps production if it is among the
tied; otherwise the earliest registered model (lowest id) wins.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054
ALPHA = 0.05
METHOD = ("accuracy over requests with feedback; 95% Wilson score interval per model; "
          "difference with a 95% Wald interval; two-sided pooled two-proportion z-test")


@dataclass(frozen=True)
class ArmCounts:
    mlmodel: int
    name: str
    version: str
    weight: float
    requests: int
    feedback: int
    correct: int
    was_production: bool = False


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_test(correct_a: int, n_a: int, correct_b: int, n_b: int) -> dict:
    """Difference a - b, its 95% interval, z and the two-sided p-value (pooled z-test)."""
    p_a, p_b = correct_a / n_a, correct_b / n_b
    difference = p_a - p_b
    pooled = (correct_a + correct_b) / (n_a + n_b)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se_pooled == 0:  # both all right or all wrong: no evidence of any difference
        z, p_value = 0.0, 1.0
    else:
        z = difference / se_pooled
        p_value = math.erfc(abs(z) / math.sqrt(2))
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return {
        "difference": difference,
        # A difference of two proportions lies in [-1, 1]; the Wald interval may not.
        "ci95": [max(-1.0, difference - Z95 * se), min(1.0, difference + Z95 * se)],
        "z": z,
        "p_value": p_value,
        "significant": p_value < ALPHA,
    }


def _rank_key(arm: ArmCounts):
    # Highest accuracy first; among equals the incumbent, then the earliest registered model.
    return (-arm.correct / arm.feedback, not arm.was_production, arm.mlmodel)


def results(arms: list[ArmCounts]) -> dict:
    """Everything a reader needs to judge a test: per-model figures, comparisons, the leader.

    Models without feedback have no accuracy and take no part in the ranking.
    """
    models = []
    for arm in arms:
        interval = wilson_interval(arm.correct, arm.feedback)
        models.append({
            **asdict(arm),
            "accuracy": arm.correct / arm.feedback if arm.feedback else None,
            "ci95": list(interval) if interval else None,
        })
    judged = sorted((arm for arm in arms if arm.feedback), key=_rank_key)
    out = {"method": METHOD, "models": models, "comparisons": [], "leader": None, "tie": False,
           "complete": len(judged) == len(arms) and len(arms) >= 2}
    if not judged:
        return out
    leader = judged[0]
    out["leader"] = leader.mlmodel
    out["tie"] = any(a.correct * leader.feedback == leader.correct * a.feedback
                     for a in judged[1:])
    for other in judged[1:]:
        test = two_proportion_test(leader.correct, leader.feedback, other.correct, other.feedback)
        out["comparisons"].append({"leader": leader.mlmodel, "other": other.mlmodel, **test})
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def summary_text(result: dict) -> str:
    """A few lines a person can read: each model's figures, then how sure the comparison is."""
    names = {m["mlmodel"]: f"{m['name']} {m['version']}" for m in result["models"]}
    lines = []
    for m in result["models"]:
        if m["accuracy"] is None:
            lines.append(f"{names[m['mlmodel']]}: {m['requests']} requests, no feedback")
            continue
        low, high = m["ci95"]
        lines.append(
            f"{names[m['mlmodel']]}: {m['requests']} requests, {m['feedback']} with feedback, "
            f"{m['correct']} correct, accuracy {_pct(m['accuracy'])} "
            f"(95% CI {_pct(low)} to {_pct(high)})"
        )
    for c in result["comparisons"]:
        low, high = c["ci95"]
        verdict = ("significant at the 5% level" if c["significant"]
                   else "not significant at the 5% level: the data cannot tell them apart")
        lines.append(
            f"{names[c['leader']]} vs {names[c['other']]}: difference "
            f"{100 * c['difference']:+.1f} points (95% CI {100 * low:+.1f} to {100 * high:+.1f}), "
            f"p = {c['p_value']:.3g}, {verdict}"
        )
    if result["leader"] is not None:
        how = ("tie on accuracy, decided by the tie rule (incumbent, then earliest registered)"
               if result["tie"] else "highest accuracy")
        lines.append(f"leader: {names[result['leader']]} ({how})")
    return "\n".join(lines)


def cumulative_accuracy(outcomes: list[tuple[float, bool]], max_points: int = 400) -> list[dict]:
    """Accuracy after each feedback, in feedback order, with its 95% Wilson interval.

    ``outcomes``: (time as a Unix timestamp, answered right?) in time order. Beyond
    ``max_points`` feedbacks every k-th point is kept (and always the last), so a long test
    still draws quickly; ``n`` says how many feedbacks each point stands on.
    """
    points, correct = [], 0
    step = max(1, -(-len(outcomes) // max_points))
    for n, (at, right) in enumerate(outcomes, start=1):
        correct += right
        if n % step and n != len(outcomes):
            continue
        low, high = wilson_interval(correct, n)
        points.append({"t": at, "n": n, "accuracy": correct / n, "low": low, "high": high})
    return points


def comparison_sentence(comparison: dict, names: dict, *, running: bool) -> str:
    """The comparison of two models in plain words, for a person deciding what to do."""
    leader, other = names[comparison["leader"]], names[comparison["other"]]
    points = 100 * comparison["difference"]
    low, high = (100 * x for x in comparison["ci95"])
    figures = f"95% CI {low:.1f} to {high:.1f}, p = {comparison['p_value']:.2g}"
    if comparison["significant"]:
        return (f"{leader} is {points:.1f} points more accurate than {other} ({figures}): "
                f"significant at the 5% level")
    ahead = (f"{leader} and {other} are equally accurate" if comparison["difference"] == 0
             else f"{leader} is {points:.1f} points ahead of {other}")
    return f"{ahead} ({figures}): cannot tell them apart{' yet' if running else ''}"
