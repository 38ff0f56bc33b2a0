"""A/B statistics against values computed by hand (and checked against published tables)."""
import pytest

from apps.endpoints import ab_statistics

from apps.endpoints.ab_statistics import (
    ArmCounts, results, summary_text, two_proportion_test, wilson_interval,
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
    text = summary_text(results([arm(1, 100, 65), arm(2, 100, 80)]))
    assert "m2 1: 100 requests, 100 with feedback, 80 correct, accuracy 80.0% " \
           "(95% CI 71.1% to 86.7%)" in text
    assert "m2 1 vs m1 1: difference +15.0 points (95% CI +2.8 to +27.2), p = 0.0175, " \
           "significant at the 5% level" in text
    assert text.endswith("leader: m2 1 (highest accuracy)")


def test_the_comparison_in_plain_words():
    names = {1: "B", 2: "A"}
    significant = {"leader": 1, "other": 2, "difference": 0.031, "ci95": [0.004, 0.058],
                   "p_value": 0.02, "significant": True}
    assert ab_statistics.comparison_sentence(significant, names, running=True) == (
        "B is 3.1 points more accurate than A (95% CI 0.4 to 5.8, p = 0.02): significant at "
        "the 5% level")
    unsure = {**significant, "ci95": [-0.01, 0.072], "p_value": 0.49, "significant": False}
    assert ab_statistics.comparison_sentence(unsure, names, running=True).endswith(
        "p = 0.49): cannot tell them apart yet")
    assert ab_statistics.comparison_sentence(unsure, names, running=False).endswith(
        "cannot tell them apart")
    tie = {**unsure, "difference": 0.0}
    assert ab_statistics.comparison_sentence(tie, names, running=True).startswith(
        "B and A are equally accurate")


def test_cumulative_accuracy_has_a_point_per_feedback_with_its_interval():
    outcomes = [(10.0, True), (11.0, False), (12.0, True), (13.0, True)]
    points = ab_statistics.cumulative_accuracy(outcomes)
    assert [(p["t"], p["n"], p["accuracy"]) for p in points] == [
        (10.0, 1, 1.0), (11.0, 2, 0.5), (12.0, 3, 2 / 3), (13.0, 4, 0.75)]
    assert all(p["low"] <= p["accuracy"] <= p["high"] for p in points)
    many = ab_statistics.cumulative_accuracy([(float(i), i % 2 == 0) for i in range(1000)],
                                             max_points=100)
    assert len(many) == 100 and many[-1]["n"] == 1000
