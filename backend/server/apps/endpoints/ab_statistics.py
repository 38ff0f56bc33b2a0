"""A/B test statistics: plain functions over counts, no database and no HTTP.

Per model: accuracy over the requests that received feedback, with a 95% Wilson score interval
(it stays inside [0, 1] and behaves at small counts, where the textbook Wald interval does not).

Between the leader and each other model, two readings of the difference in accuracy:

- fixed-horizon: a 95% (unpooled Wald) interval and the pooled two-proportion z-test. It is right
  only when read once, at a sample size fixed in advance; read after every feedback and stopped at
  the first p < alpha it declares a difference between two equal models far more often than alpha
  (tests/test_experiment_simulations.py measures how often).
- always-valid: the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and
  Walsh ("Always valid inference", Operations Research 2022; "Peeking at A/B tests", KDD 2017) and
  its confidence sequence. Its p-value may be read after every feedback and the test stopped the
  first time it is <= alpha, and the chance of ever stopping on two equal models stays <= alpha.
  This is the one the decision and auto-stop use. It rests on the normal approximation, so it
  says nothing (p = 1) until the smaller arm has enough feedback for that (MIN_EXPECTED).

With k models the leader is picked from the data, so it is compared against k(k-1)/2 possible
pairs; the always-valid p-values are Bonferroni-adjusted for them (m * p, confidence sequences at
alpha / m). The fixed-horizon figures are not adjusted: they are shown for reference.

The leader is the model with the highest accuracy. Equal accuracies are a tie, decided by a fixed
rule: the model that was in production when the test started keeps the lead if it is among the
tied; otherwise the earliest registered model (lowest id). What a stop does with the leader is the
test's policy: "best" promotes it whatever the evidence (and says when the evidence is weak);
"significant" changes production only when the leader is better at the test's alpha.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest

Z95 = 1.959963984540054
ALPHA = 0.05
# Standard deviation of the mSPRT's normal mixing distribution over the true difference in
# accuracy: the test is most sensitive to differences of about this size (5 points).
TAU = 0.05
# The mSPRT here uses the normal approximation of the difference of two proportions. Until the
# smaller arm expects this many right and this many wrong answers under the null (the textbook
# rule n*p >= 10 and n*(1-p) >= 10), that approximation is poor and the p-value stays at 1.
MIN_EXPECTED = 10
POLICIES = ("best", "significant")
METHOD = ("accuracy over requests with feedback; 95% Wilson score interval per model; "
          "fixed-horizon: difference with a 95% Wald interval and the two-sided pooled "
          "two-proportion z-test (valid only if read once); always-valid: mixture SPRT p-value "
          f"and confidence sequence (normal mixture, tau = {TAU}), valid at any stopping time, "
          "Bonferroni-adjusted for the k(k-1)/2 pairs of k models; the decision uses the "
          "always-valid figures")


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


def accuracy(requests: int, feedback: int, correct: int) -> dict:
    """Live accuracy over the requests with feedback, with its 95% Wilson interval: a model's in
    a test, on its page, or as a shadow."""
    interval = wilson_interval(correct, feedback)
    return {"requests": requests, "feedback": feedback, "correct": correct,
            "accuracy": correct / feedback if feedback else None,
            "ci95": list(interval) if interval else None}


def two_proportion_test(correct_a: int, n_a: int, correct_b: int, n_b: int,
                        alpha: float = ALPHA) -> dict:
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
        "significant": p_value < alpha,
    }


def _as_arrays(*values):
    return [np.asarray(v, dtype=float) for v in values]


def _scalar_or_array(x: np.ndarray):
    return float(x) if x.ndim == 0 else x


def _normal_enough(correct_a, n_a, correct_b, n_b):
    """Where the normal approximation may be used (see MIN_EXPECTED), and the smoothed pooled
    accuracy: one right and one wrong answer added, so it is never 0 or 1."""
    pooled = (correct_a + correct_b + 1) / (n_a + n_b + 2)
    enough = np.minimum(n_a, n_b) * np.minimum(pooled, 1 - pooled) >= MIN_EXPECTED
    return enough & (n_a > 0) & (n_b > 0), pooled


def always_valid_p_value(correct_a, n_a, correct_b, n_b, tau: float = TAU):
    """The mSPRT p-value for "accuracy a = accuracy b", valid however often it is read.

    With d = p_a - p_b and its variance s2 under the null (pooled, smoothed accuracy), the
    likelihood ratio of "the difference is drawn from N(0, tau2)" against "no difference" is
    Lambda = sqrt(s2 / (s2 + tau2)) * exp(tau2 * d2 / (2 * s2 * (s2 + tau2))). In the normal
    approximation it is a nonnegative martingale with mean 1 under the null, so by Ville's
    inequality P(Lambda ever >= 1/alpha) <= alpha: the p-value min(1, 1/Lambda) at the current
    counts is valid at any stopping time, and stopping the first time it is <= alpha is the
    mSPRT. Stateless: only the current counts matter.

    The plug-in variance is trustworthy only once the normal approximation is. With traffic
    split very unevenly (as Thompson routing does) and accuracies near 1, a handful of wrong
    answers in a small arm otherwise looks decisive: simulated A/A tests stopped falsely 6-9% of
    the time at alpha = 0.05. So the p-value stays 1 until the smaller arm expects MIN_EXPECTED
    right and wrong answers under the null, which brings them back under alpha
    (tests/test_experiment_simulations.py); at balanced traffic it changes nothing, since the
    mixture with tau = 0.05 cannot reach 1/alpha on so few counts anyway.

    Accepts scalars (returns a float) or numpy arrays (broadcast; returns an array).
    """
    correct_a, n_a, correct_b, n_b = _as_arrays(correct_a, n_a, correct_b, n_b)
    enough, pooled = _normal_enough(correct_a, n_a, correct_b, n_b)
    n_a, n_b = np.where(enough, n_a, 1.0), np.where(enough, n_b, 1.0)  # no 0/0 where unused
    d = correct_a / n_a - correct_b / n_b
    s2 = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    t2 = tau * tau
    log_lambda = 0.5 * np.log(s2 / (s2 + t2)) + t2 * d * d / (2 * s2 * (s2 + t2))
    p = np.where(enough, np.minimum(1.0, np.exp(-log_lambda)), 1.0)
    return _scalar_or_array(p)


def confidence_sequence(correct_a, n_a, correct_b, n_b, alpha: float, tau: float = TAU):
    """An always-valid (1 - alpha) interval for p_a - p_b: it covers the true difference at
    every sample size at once, with probability >= 1 - alpha.

    It is the set of differences theta the same mixture does not reject, Lambda(theta) < 1/alpha,
    with the variance of d taken unpooled (each arm's own smoothed accuracy), since theta need not
    be 0: |d - theta|^2 < 2 s2 (s2 + tau2) / tau2 * (ln(1/alpha) + ln((s2 + tau2) / s2) / 2).
    It is wider than the Wald interval at every sample size (the price of reading it anytime) and
    is [-1, 1] until the normal approximation holds (MIN_EXPECTED). Because the variances differ,
    whether it contains 0 can disagree with always_valid_p_value at the margin.

    Scalars give a pair of floats, arrays a pair of arrays.
    """
    correct_a, n_a, correct_b, n_b = _as_arrays(correct_a, n_a, correct_b, n_b)
    enough, _ = _normal_enough(correct_a, n_a, correct_b, n_b)
    smooth_a, smooth_b = (correct_a + 1) / (n_a + 2), (correct_b + 1) / (n_b + 2)
    n_a, n_b = np.where(enough, n_a, 1.0), np.where(enough, n_b, 1.0)  # no 0/0 where unused
    s2 = smooth_a * (1 - smooth_a) / n_a + smooth_b * (1 - smooth_b) / n_b
    t2 = tau * tau
    half = np.sqrt(2 * s2 * (s2 + t2) / t2 * (math.log(1 / alpha) + 0.5 * np.log((s2 + t2) / s2)))
    d = correct_a / n_a - correct_b / n_b
    low = np.where(enough, np.maximum(-1.0, d - half), -1.0)
    high = np.where(enough, np.minimum(1.0, d + half), 1.0)
    return _scalar_or_array(low), _scalar_or_array(high)


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for two models scored on the same requests.

    Only the discordant requests carry evidence: b where the first is right and the second wrong,
    c the reverse; under "equally accurate" each is the first kind with probability 1/2.
    """
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5).pvalue)


def _rank_key(arm: ArmCounts):
    # Highest accuracy first; among equals the incumbent, then the earliest registered model.
    return (-arm.correct / arm.feedback, not arm.was_production, arm.mlmodel)


def _comparison(leader: ArmCounts, other: ArmCounts, alpha: float, pairs: int) -> dict:
    counts = (leader.correct, leader.feedback, other.correct, other.feedback)
    p = min(1.0, pairs * always_valid_p_value(*counts))
    low, high = confidence_sequence(*counts, alpha=alpha / pairs)
    return {"leader": leader.mlmodel, "other": other.mlmodel,
            **two_proportion_test(*counts, alpha=alpha), "alpha": alpha,
            "sequential": {"p_value": p, "cs": [low, high], "cs_alpha": alpha / pairs,
                           "significant": p <= alpha}}


def results(arms: list[ArmCounts], *, alpha: float = ALPHA, policy: str = "best") -> dict:
    """Everything a reader needs to judge a test: per-model figures, comparisons, the leader,
    and what the policy would do with production if the test stopped now.

    Models without feedback have no accuracy and take no part in the ranking.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
    models = [{**asdict(arm), **accuracy(arm.requests, arm.feedback, arm.correct)}
              for arm in arms]
    judged = sorted((arm for arm in arms if arm.feedback), key=_rank_key)
    out = {"method": METHOD, "alpha": alpha, "policy": policy, "models": models,
           "comparisons": [], "leader": None, "tie": False,
           "complete": len(judged) == len(arms) and len(arms) >= 2}
    if judged:
        leader = judged[0]
        out["leader"] = leader.mlmodel
        out["tie"] = any(a.correct * leader.feedback == leader.correct * a.feedback
                         for a in judged[1:])
        out["comparisons"] = [_comparison(leader, other, alpha, _pairs(arms))
                              for other in judged[1:]]
    out["decision"] = _decision(out, arms, judged)
    return out


def _pairs(arms: list[ArmCounts]) -> int:
    """The comparisons a test of these models could make: what Bonferroni divides alpha by."""
    return max(1, len(arms) * (len(arms) - 1) // 2)


def _name(arm: ArmCounts) -> str:
    return f"{arm.name} {arm.version}"


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _decision(out: dict, arms: list[ArmCounts], judged: list[ArmCounts]) -> dict:
    """What a stop now would do with production under the test's policy, and why in words.

    The leader must beat the incumbent (the model in production when the test started) or,
    when there is none or the leader is the incumbent, every other model; "significant" says
    whether it does by the always-valid test. Only complete results decide anything.
    """
    policy = out["policy"]
    if not out["complete"]:
        reason = ("no decision yet: no feedback for "
                  + _listed([_name(a) for a in arms if not a.feedback])
                  if len(arms) >= 2 else "no decision: a test needs at least two models")
        return {"policy": policy, "promote": None, "significant": False, "reason": reason}
    leader = judged[0]
    incumbent = next((a for a in arms if a.was_production), None)
    rivals = [incumbent] if incumbent is not None and incumbent is not leader else judged[1:]
    against = [c for c in out["comparisons"] if c["other"] in {a.mlmodel for a in rivals}]
    significant = all(c["sequential"]["significant"] for c in against)
    worst = max(against, key=lambda c: c["sequential"]["p_value"])  # the one that decides
    figures = f"always-valid p = {worst['sequential']['p_value']:.2g}"
    if len(rivals) > 1:
        figures += f" against {_name(next(a for a in rivals if a.mlmodel == worst['other']))}"
    if policy == "best":
        promote, reason = leader.mlmodel, _best_reason(out, leader, worst, figures, significant)
    elif incumbent is not None and incumbent is not leader and not significant and (
            runner_up := _significant_challenger(out, arms, judged, incumbent)) is not None:
        # The leader is not yet shown better than the incumbent, but a model between them is.
        challenger, comparison = runner_up
        significant = True
        promote, reason = challenger.mlmodel, (
            f"{_name(challenger)} is better than the incumbent {_name(incumbent)} at the "
            f"{100 * out['alpha']:g}% level (always-valid p = "
            f"{comparison['sequential']['p_value']:.2g}); {_name(leader)} is more accurate "
            f"still, but not yet shown better than the incumbent ({figures})")
    else:
        promote, reason = _significant_policy(out, leader, incumbent, rivals, figures,
                                              significant)
    return {"policy": policy, "promote": promote, "significant": significant, "reason": reason}


def _significant_challenger(out: dict, arms: list[ArmCounts], judged: list[ArmCounts],
                           incumbent: ArmCounts) -> tuple[ArmCounts, dict] | None:
    """The most accurate model after the leader that the always-valid test shows better than
    the incumbent, with that comparison; None if there is none. (Only models ranked above the
    incumbent can be better than it.)"""
    for challenger in judged[1:]:
        if challenger is incumbent:
            return None
        comparison = _comparison(challenger, incumbent, out["alpha"], _pairs(arms))
        if comparison["sequential"]["significant"]:
            return challenger, comparison
    return None


def _best_reason(out: dict, leader: ArmCounts, worst: dict, figures: str,
                 significant: bool) -> str:
    head = (f"{_name(leader)} ties on accuracy and the tie rule (the incumbent, then the "
            "earliest registered model) decided for it" if out["tie"]
            else f"{_name(leader)} is the most accurate")
    if significant:
        return f"{head}; the difference is significant ({figures})"
    low, high = (100 * x for x in worst["sequential"]["cs"])
    return (f"{head}; it is promoted on a difference that is not significant "
            f"({100 * worst['difference']:+.1f} points, {figures}, "
            f"{100 * (1 - worst['sequential']['cs_alpha']):g}% confidence sequence "
            f"{low:+.1f} to {high:+.1f})")


def _significant_policy(out: dict, leader: ArmCounts, incumbent: ArmCounts | None,
                        rivals: list[ArmCounts], figures: str,
                        significant: bool) -> tuple[int | None, str]:
    """Under "significant", production changes only for a leader that is better: who to
    promote (None to leave production as it was) and why."""
    level = f"{100 * out['alpha']:g}%"
    if leader is incumbent:
        return None, (f"production stays as it was: the incumbent {_name(leader)} is the most "
                      f"accurate{' (a tie, kept by the tie rule)' if out['tie'] else ''}")
    rival_names = _listed([_name(a) for a in rivals])
    if not significant:
        if incumbent is not None:
            return None, (f"production stays as it was: no model is better than the incumbent "
                          f"{rival_names} at the {level} level ({figures} for "
                          f"{_name(leader)}, the most accurate)")
        return None, (f"production stays as it was: {_name(leader)}, the most accurate, is not "
                      f"better than {rival_names} at the {level} level ({figures})")
    return leader.mlmodel, (f"{_name(leader)} is better than {rival_names} at the {level} "
                            f"level ({figures})")


def auto_stop_reason(result: dict, *, max_feedback: int | None) -> str | None:
    """Why a running auto-stop test should stop now, or None to keep it running.

    "significant": every model has feedback and the leader is better than every other model by
    the always-valid test at the test's alpha (the mSPRT stopping rule). "budget": every model
    has feedback and the total feedback has reached max_feedback. Significance is checked first.
    """
    if not result["complete"]:
        return None
    if result["comparisons"] and all(c["sequential"]["significant"]
                                     for c in result["comparisons"]):
        return "significant"
    if max_feedback is not None and sum(m["feedback"] for m in result["models"]) >= max_feedback:
        return "budget"
    return None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def summary_text(result: dict) -> str:
    """A few lines a person can read: each model's figures, how sure each comparison is (both
    readings), the leader, and last what the policy does with production and why."""
    names = {m["mlmodel"]: f"{m['name']} {m['version']}" for m in result["models"]}
    level = f"{100 * result['alpha']:g}%"
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
        seq = c["sequential"]
        seq_low, seq_high = seq["cs"]
        lines.append(
            f"{names[c['leader']]} vs {names[c['other']]}: difference "
            f"{100 * c['difference']:+.1f} points (95% CI {100 * low:+.1f} to {100 * high:+.1f}), "
            f"p = {c['p_value']:.3g}, {'' if c['significant'] else 'not '}significant at the "
            f"{level} level if read once; always-valid p = {seq['p_value']:.3g} (confidence "
            f"sequence {100 * seq_low:+.1f} to {100 * seq_high:+.1f}), "
            + ("significant however often it was read" if seq["significant"]
               else "not significant: the data cannot tell them apart")
        )
    if result["leader"] is not None:
        how = ("tie on accuracy, decided by the tie rule (incumbent, then earliest registered)"
               if result["tie"] else "highest accuracy")
        lines.append(f"leader: {names[result['leader']]} ({how})")
    lines.append(f"decision ({result['policy']} policy): {result['decision']['reason']}")
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
    """The comparison of two models in plain words, for a person deciding what to do: the
    fixed-horizon reading, then the always-valid one, which holds however often it was read."""
    leader, other = names[comparison["leader"]], names[comparison["other"]]
    points = 100 * comparison["difference"]
    low, high = (100 * x for x in comparison["ci95"])
    level = f"{100 * comparison.get('alpha', ALPHA):g}%"
    figures = f"95% CI {low:.1f} to {high:.1f}, p = {comparison['p_value']:.2g}"
    if comparison["significant"]:
        sentence = (f"{leader} is {points:.1f} points more accurate than {other} ({figures}): "
                    f"significant at the {level} level if read once")
    else:
        ahead = (f"{leader} and {other} are equally accurate" if comparison["difference"] == 0
                 else f"{leader} is {points:.1f} points ahead of {other}")
        sentence = f"{ahead} ({figures}): cannot tell them apart{' yet' if running else ''}"
    # Tests stopped before the always-valid figures existed have none in their frozen results.
    seq = comparison.get("sequential")
    if seq is None:
        return sentence
    verdict = (f"significant at the {level} level however often it is read" if seq["significant"]
               else "not significant")
    seq_low, seq_high = (100 * x for x in seq["cs"])
    return (f"{sentence}; always-valid p = {seq['p_value']:.2g} (confidence sequence "
            f"{seq_low:.1f} to {seq_high:.1f}): {verdict}")
