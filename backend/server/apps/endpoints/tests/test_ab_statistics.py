"""A/B statistics against values computed by hand (and checked against published tables)."""
import numpy as np
import pytest
from scipy.stats import binomtest

from apps.endpoints import ab_statistics
from apps.endpoints.ab_statistics import (
    ArmCounts, always_valid_p_value, auto_stop_reason, confidence_sequence, mcnemar, results,
    summary_text, two_proportion_test, wilson_interval,
)


def arm(mlmodel, feedback, correct, requests=None, was_production=False):
    return ArmCounts(mlmodel=mlmodel, name=f"m{mlmodel}", version="1", weight=1.0,
                     requests=requests if requests is not None else feedback,
                     feedback=feedback, correct=correct, was_production=was_production)


def test_wilson_interval_matches_the_hand_computed_value():
    # 80/100: centre (0.8 + 1.96²/200) / (1 + 1.96²/100) = 0.78891,
    # half-width 1.96 * sqrt(0.0016 + 1.96²/40000) / 1.038415 = 0.07773.
    low, high = wilson_interval(80, 100)
    assert low == pytest.approx(0.71117, abs=1e-4)
    assert high == pytest.approx(0.86664, abs=1e-4)


def test_wilson_interval_stays_inside_zero_and_one():
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(10, 10)[0] == pytest.approx(0.72246, abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0)
    assert wilson_interval(0, 0) is None


def test_two_proportion_test_matches_the_hand_computed_value():
    # 80/100 vs 65/100: pooled p 0.725, se sqrt(0.725 * 0.275 * 0.02) = 0.063147,
    # z = 0.15 / 0.063147 = 2.3754, two-sided p = 2 * (1 - Phi(2.3754)) = 0.01753.
    test = two_proportion_test(80, 100, 65, 100)
    assert test["difference"] == pytest.approx(0.15)
    assert test["z"] == pytest.approx(2.3754, abs=1e-4)
    assert test["p_value"] == pytest.approx(0.01753, abs=1e-4)
    assert test["significant"] is True
    # Wald interval: 0.15 ± 1.96 * sqrt(0.8*0.2/100 + 0.65*0.35/100) = 0.15 ± 0.12201
    assert test["ci95"] == pytest.approx([0.02799, 0.27201], abs=1e-4)


def test_a_small_difference_is_not_significant():
    test = two_proportion_test(133, 150, 131, 150)
    assert test["p_value"] > 0.5 and test["significant"] is False


def test_identical_perfect_models_have_p_value_one():
    assert two_proportion_test(50, 50, 30, 30)["p_value"] == 1.0


def test_results_rank_by_accuracy_and_compare_the_leader_with_each_other_model():
    out = results([arm(1, 100, 65), arm(2, 100, 80), arm(3, 50, 30)])
    assert out["leader"] == 2 and out["tie"] is False and out["complete"] is True
    assert [c["other"] for c in out["comparisons"]] == [1, 3]
    assert out["models"][1]["accuracy"] == 0.8
    assert out["models"][1]["ci95"] == pytest.approx([0.71117, 0.86664], abs=1e-4)


def test_a_tie_goes_to_the_incumbent():
    out = results([arm(1, 100, 80), arm(2, 50, 40, was_production=True)])
    assert out["tie"] is True and out["leader"] == 2
    assert "tie on accuracy" in summary_text(out)


def test_a_tie_without_incumbent_goes_to_the_earliest_registered_model():
    out = results([arm(7, 100, 80), arm(3, 100, 80)])
    assert out["tie"] is True and out["leader"] == 3


def test_a_model_without_feedback_has_no_accuracy_and_no_rank():
    out = results([arm(1, 0, 0, requests=5), arm(2, 10, 9)])
    assert out["models"][0]["accuracy"] is None and out["models"][0]["ci95"] is None
    assert out["leader"] == 2 and out["complete"] is False and out["comparisons"] == []
    assert "m1 1: 5 requests, no feedback" in summary_text(out)


def test_summary_text_states_figures_and_how_sure_the_comparison_is():
    result = results([arm(1, 100, 65), arm(2, 100, 80)])
    text = summary_text(result)
    assert "m2 1: 100 requests, 100 with feedback, 80 correct, accuracy 80.0% " \
           "(95% CI 71.1% to 86.7%)" in text
    low, high = (100 * x for x in result["comparisons"][0]["sequential"]["cs"])
    assert "m2 1 vs m1 1: difference +15.0 points (95% CI +2.8 to +27.2), p = 0.0175, " \
           "significant at the 5% level if read once; always-valid p = 0.433 (confidence " \
           f"sequence {low:+.1f} to {high:+.1f}), not significant: the data cannot tell them " \
           "apart" in text
    assert "leader: m2 1 (highest accuracy)" in text
    assert text.endswith("decision (best policy): " + result["decision"]["reason"])


def test_the_comparison_in_plain_words():
    names = {1: "B", 2: "A"}
    significant = {"leader": 1, "other": 2, "difference": 0.031, "ci95": [0.004, 0.058],
                   "p_value": 0.02, "significant": True, "alpha": 0.05,
                   "sequential": {"p_value": 0.31, "cs": [-0.012, 0.074], "significant": False}}
    assert ab_statistics.comparison_sentence(significant, names, running=True) == (
        "B is 3.1 points more accurate than A (95% CI 0.4 to 5.8, p = 0.02): significant at "
        "the 5% level if read once; always-valid p = 0.31 (confidence sequence -1.2 to 7.4): "
        "not significant")
    unsure = {**significant, "ci95": [-0.01, 0.072], "p_value": 0.49, "significant": False}
    assert ab_statistics.comparison_sentence(unsure, names, running=True).startswith(
        "B is 3.1 points ahead of A (95% CI -1.0 to 7.2, p = 0.49): cannot tell them apart yet; "
        "always-valid p = 0.31")
    assert "cannot tell them apart; always-valid" in ab_statistics.comparison_sentence(
        unsure, names, running=False)
    tie = {**unsure, "difference": 0.0}
    assert ab_statistics.comparison_sentence(tie, names, running=True).startswith(
        "B and A are equally accurate")
    sure = {**significant, "alpha": 0.01,
            "sequential": {"p_value": 0.004, "cs": [0.002, 0.06], "significant": True}}
    assert ab_statistics.comparison_sentence(sure, names, running=True).endswith(
        "significant at the 1% level if read once; always-valid p = 0.004 (confidence sequence "
        "0.2 to 6.0): significant at the 1% level however often it is read")


def test_a_comparison_frozen_before_the_always_valid_figures_still_reads():
    old = {"leader": 1, "other": 2, "difference": 0.031, "ci95": [0.004, 0.058],
           "p_value": 0.02, "significant": True}
    assert ab_statistics.comparison_sentence(old, {1: "B", 2: "A"}, running=False) == (
        "B is 3.1 points more accurate than A (95% CI 0.4 to 5.8, p = 0.02): significant at "
        "the 5% level if read once")


def test_cumulative_accuracy_has_a_point_per_feedback_with_its_interval():
    outcomes = [(10.0, True), (11.0, False), (12.0, True), (13.0, True)]
    points = ab_statistics.cumulative_accuracy(outcomes)
    assert [(p["t"], p["n"], p["accuracy"]) for p in points] == [
        (10.0, 1, 1.0), (11.0, 2, 0.5), (12.0, 3, 2 / 3), (13.0, 4, 0.75)]
    assert all(p["low"] <= p["accuracy"] <= p["high"] for p in points)
    many = ab_statistics.cumulative_accuracy([(float(i), i % 2 == 0) for i in range(1000)],
                                             max_points=100)
    assert len(many) == 100 and many[-1]["n"] == 1000


# --- always-valid (sequential) figures -------------------------------------------------------

def test_always_valid_p_value_matches_the_hand_computed_mixture_ratio():
    # 460/500 vs 420/500: d = 0.08; smoothed pooled p = 881/1002 = 0.8792415,
    # s2 = 0.8792415 * 0.1207585 * (2/500) = 4.24704e-4, s2 + tau2 = 2.924704e-3,
    # Lambda = sqrt(4.24704e-4 / 2.924704e-3) * exp(0.0025 * 0.0064 / (2 * 4.24704e-4 *
    # 2.924704e-3)) = 0.381068 * exp(6.440540) = 0.381068 * 626.745 = 238.83; p = 1/238.83.
    assert always_valid_p_value(460, 500, 420, 500) == pytest.approx(0.0041870, rel=1e-4)
    assert isinstance(always_valid_p_value(460, 500, 420, 500), float)
    # Symmetric in the two arms, and 1 when they agree exactly.
    assert always_valid_p_value(420, 500, 460, 500) == always_valid_p_value(460, 500, 420, 500)
    assert always_valid_p_value(430, 500, 430, 500) == 1.0


def test_always_valid_p_value_is_far_more_cautious_than_the_fixed_horizon_test():
    fixed = two_proportion_test(80, 100, 65, 100)["p_value"]  # 0.0175
    assert always_valid_p_value(80, 100, 65, 100) > 10 * fixed
    assert always_valid_p_value(800, 1000, 650, 1000) < 1e-9  # but it does converge


def test_always_valid_p_value_is_one_without_feedback_or_before_the_normal_approximation():
    assert always_valid_p_value(0, 0, 5, 10) == 1.0
    assert always_valid_p_value(5, 10, 0, 0) == 1.0
    # A small arm next to a large one: 3 of 8 right vs 970 of 1000 looks decisive, but the
    # smaller arm expects only 8 * 0.035 = 0.3 wrong answers under the null (MIN_EXPECTED = 10).
    assert always_valid_p_value(3, 8, 970, 1000) == 1.0
    assert always_valid_p_value(30, 100, 850, 1000) < 1e-6  # 100 * 0.226 = 22.6 expected wrong


def test_always_valid_p_value_takes_numpy_arrays_and_broadcasts():
    p = always_valid_p_value(np.array([460, 430, 0]), np.array([500, 500, 0]), 420, 500)
    assert isinstance(p, np.ndarray) and p.shape == (3,)
    assert p == pytest.approx([always_valid_p_value(460, 500, 420, 500),
                               always_valid_p_value(430, 500, 420, 500), 1.0])
    grid = always_valid_p_value(np.full((2, 1), 460), 500, np.array([[400, 420, 440]]), 500)
    assert grid.shape == (2, 3) and np.all(np.diff(grid[0]) > 0)  # closer, less evidence


def test_the_confidence_sequence_matches_the_hand_computed_value():
    # Unpooled smoothed: 461/502 = 0.918327 and 421/502 = 0.838645;
    # v = 0.918327 * 0.081673 / 500 + 0.838645 * 0.161355 / 500 = 4.20632e-4;
    # half = sqrt(2 v (v + tau2) / tau2 * (ln 20 + ln((v + tau2) / v) / 2))
    #      = sqrt(9.82810e-4 * 3.964630) = 0.062423.
    low, high = confidence_sequence(460, 500, 420, 500, alpha=0.05)
    assert (low, high) == pytest.approx((0.08 - 0.062423, 0.08 + 0.062423), abs=1e-6)


@pytest.mark.parametrize("counts", [(460, 500, 420, 500), (80, 100, 65, 100),
                                    (2700, 3000, 2650, 3100), (95, 100, 50, 100)])
def test_the_confidence_sequence_contains_the_estimate_and_is_wider_than_the_wald_interval(
        counts):
    low, high = confidence_sequence(*counts, alpha=0.05)
    wald_low, wald_high = two_proportion_test(*counts)["ci95"]
    difference = counts[0] / counts[1] - counts[2] / counts[3]
    assert -1 <= low < wald_low < difference < wald_high < high <= 1


def test_the_confidence_sequence_is_everything_until_there_is_evidence():
    assert confidence_sequence(0, 0, 3, 4, alpha=0.05) == (-1.0, 1.0)
    assert confidence_sequence(3, 8, 970, 1000, alpha=0.05) == (-1.0, 1.0)
    low, high = confidence_sequence(np.array([460, 0]), np.array([500, 0]), 420, 500, 0.05)
    assert low[1] == -1.0 and high[1] == 1.0 and low[0] > 0


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_pairs():
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(5, 5) == 1.0
    assert mcnemar(10, 0) == pytest.approx(2 * 0.5 ** 10)  # 0.00195
    assert mcnemar(7, 1) == pytest.approx(2 * 9 / 256)  # (1 + 8) / 2^8, both tails: 0.0703
    assert mcnemar(3, 12) == pytest.approx(binomtest(3, 15, 0.5).pvalue)  # 0.0352
    assert mcnemar(3, 12) == mcnemar(12, 3)


# --- results: sequential figures, multiple comparisons, decisions -----------------------------

def test_each_comparison_has_its_always_valid_figures():
    out = results([arm(1, 500, 420), arm(2, 500, 460)])
    seq = out["comparisons"][0]["sequential"]
    assert seq["p_value"] == pytest.approx(always_valid_p_value(460, 500, 420, 500))
    assert seq["cs"] == pytest.approx(list(confidence_sequence(460, 500, 420, 500, 0.05)))
    assert seq["significant"] is True
    assert out["alpha"] == 0.05 and out["policy"] == "best"
    assert "always-valid" in out["method"] and "Bonferroni" in out["method"]


def test_with_three_models_the_always_valid_figures_are_corrected_for_three_pairs():
    out = results([arm(1, 3000, 2400), arm(2, 3000, 2500), arm(3, 3000, 2300)])
    first = out["comparisons"][0]
    assert first["sequential"]["p_value"] == pytest.approx(
        3 * always_valid_p_value(2500, 3000, 2400, 3000))
    assert first["sequential"]["cs"] == pytest.approx(
        list(confidence_sequence(2500, 3000, 2400, 3000, alpha=0.05 / 3)))
    # The fixed-horizon figures are for reference and stay uncorrected.
    assert first["p_value"] == pytest.approx(two_proportion_test(2500, 3000, 2400, 3000)[
        "p_value"])


def test_the_fixed_horizon_verdict_uses_the_tests_alpha():
    counts = [arm(1, 100, 65), arm(2, 100, 80)]  # fixed-horizon p = 0.0175
    assert results(counts)["comparisons"][0]["significant"] is True
    assert results(counts, alpha=0.01)["comparisons"][0]["significant"] is False


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown policy 'bold'"):
        results([arm(1, 10, 5), arm(2, 10, 6)], policy="bold")


def test_best_promotes_a_significant_leader_and_says_so():
    decision = results([arm(1, 1000, 650, was_production=True), arm(2, 1000, 800)])["decision"]
    assert decision["promote"] == 2 and decision["significant"] is True
    assert decision["reason"].startswith("m2 1 is the most accurate; the difference is "
                                         "significant (always-valid p = 7.4e-11)")


def test_best_promotes_the_leader_on_a_weak_difference_and_says_that_too():
    decision = results([arm(1, 100, 65), arm(2, 100, 80)])["decision"]
    assert decision["promote"] == 2 and decision["significant"] is False
    assert decision["policy"] == "best"
    assert decision["reason"].startswith(
        "m2 1 is the most accurate; it is promoted on a difference that is not significant "
        "(+15.0 points, always-valid p = 0.43, 95% confidence sequence ")


def test_best_says_when_the_tie_rule_decided():
    decision = results([arm(1, 100, 80), arm(2, 50, 40, was_production=True)])["decision"]
    assert decision["promote"] == 2 and decision["significant"] is False
    assert decision["reason"].startswith("m2 1 ties on accuracy and the tie rule")
    assert "promoted on a difference that is not significant" in decision["reason"]


def test_significant_keeps_production_when_the_incumbent_leads():
    decision = results([arm(1, 1000, 850, was_production=True), arm(2, 1000, 700)],
                       policy="significant")["decision"]
    assert decision["promote"] is None and decision["significant"] is True
    assert decision["reason"] == ("production stays as it was: the incumbent m1 1 is the most "
                                  "accurate")


def test_significant_promotes_a_challenger_that_is_better_than_the_incumbent():
    decision = results([arm(1, 1000, 650, was_production=True), arm(2, 1000, 800)],
                       policy="significant")["decision"]
    assert decision == {"policy": "significant", "promote": 2, "significant": True,
                        "reason": "m2 1 is better than m1 1 at the 5% level "
                                  "(always-valid p = 7.4e-11)"}


def test_significant_keeps_production_when_the_challenger_is_not_significantly_better():
    decision = results([arm(1, 100, 65, was_production=True), arm(2, 100, 80)],
                       policy="significant")["decision"]
    assert decision["promote"] is None and decision["significant"] is False
    assert decision["reason"] == (
        "production stays as it was: no model is better than the incumbent m1 1 at the 5% "
        "level (always-valid p = 0.43 for m2 1, the most accurate)")


def test_significant_judges_the_leader_only_against_the_incumbent():
    # m3 leads; it beats the incumbent m1 clearly but not m2: only the incumbent matters.
    out = results([arm(1, 2000, 1300, was_production=True), arm(2, 2000, 1560),
                   arm(3, 2000, 1600)], policy="significant")
    assert out["decision"]["promote"] == 3 and out["decision"]["significant"] is True
    assert out["decision"]["reason"].startswith("m3 1 is better than m1 1 at the 5% level")
    assert auto_stop_reason(out, max_feedback=None) is None  # m3 vs m2 is not significant


def test_significant_without_an_incumbent_needs_a_leader_better_than_every_other_model():
    clear = results([arm(1, 2000, 1300), arm(2, 2000, 1400), arm(3, 2000, 1700)],
                    policy="significant")["decision"]
    assert clear["promote"] == 3 and clear["reason"].startswith(
        "m3 1 is better than m2 1 and m1 1 at the 5% level (always-valid p = ")
    unclear = results([arm(1, 2000, 1300), arm(2, 2000, 1660), arm(3, 2000, 1700)],
                      policy="significant")["decision"]
    assert unclear["promote"] is None and unclear["significant"] is False
    assert unclear["reason"].startswith(
        "production stays as it was: m3 1, the most accurate, is not better than m2 1 and m1 1 "
        "at the 5% level (always-valid p = ")
    assert unclear["reason"].endswith(" against m2 1)")


def test_significant_on_a_tie_keeps_production():
    decision = results([arm(1, 100, 80), arm(2, 100, 80)], policy="significant")["decision"]
    assert decision["promote"] is None and decision["significant"] is False


def test_no_decision_until_every_model_has_feedback():
    for policy in ("best", "significant"):
        out = results([arm(1, 1000, 900), arm(2, 0, 0, requests=40), arm(3, 0, 0)],
                      policy=policy)
        assert out["decision"] == {"policy": policy, "promote": None, "significant": False,
                                   "reason": "no decision yet: no feedback for m2 1 and m3 1"}
        assert summary_text(out).endswith("no decision yet: no feedback for m2 1 and m3 1")


def test_auto_stop_reason():
    significant = results([arm(1, 1000, 650), arm(2, 1000, 800)])
    assert auto_stop_reason(significant, max_feedback=None) == "significant"
    assert auto_stop_reason(significant, max_feedback=100) == "significant"  # checked first
    unsure = results([arm(1, 100, 65), arm(2, 100, 80)])
    assert auto_stop_reason(unsure, max_feedback=None) is None
    assert auto_stop_reason(unsure, max_feedback=201) is None
    assert auto_stop_reason(unsure, max_feedback=200) == "budget"
    incomplete = results([arm(1, 5000, 4000), arm(2, 0, 0, requests=30)])
    assert auto_stop_reason(incomplete, max_feedback=10) is None
