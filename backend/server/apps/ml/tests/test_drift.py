"""Drift without Django: the training profile's bins and the PSI of served rows against it."""
import json
import math
import random

import pytest

from apps.ml import drift
from apps.ml.income_classifier.preprocessing import CATEGORICAL, NUMERIC, TARGET
from research import adult

SAMPLE = 1000


@pytest.fixture(scope="module")
def training_profile():
    return drift.profile(adult.load("adult.data"), NUMERIC, CATEGORICAL)


@pytest.fixture(scope="module")
def held_out_sample():
    """Rows of adult.test as a client posts them (no label), drawn at random, seeded."""
    rows = [{k: v for k, v in row.items() if k != TARGET} for row in adult.load("adult.test")]
    return random.Random(11).sample(rows, SAMPLE)


def psi_of(profile, rows) -> dict[str, float]:
    return {name: feature["psi"] for name, feature in drift.psi(profile, rows).items()}


def test_the_profile_has_every_feature_with_shares_per_bin_adding_up_to_one(training_profile):
    assert training_profile["rows"] == 32561
    assert list(training_profile["features"]) == [*NUMERIC, *CATEGORICAL]
    for name, spec in training_profile["features"].items():
        assert math.isclose(sum(spec["shares"]), 1, abs_tol=1e-5), name
        assert len(spec["shares"]) == len(drift.bin_labels(spec))
    assert drift.profile_problems(training_profile) == []
    assert json.loads(json.dumps(training_profile)) == training_profile  # plain JSON


def test_numeric_bins_are_the_training_deciles_deduplicated_and_open_ended(training_profile):
    age = training_profile["features"]["age"]
    assert age["kind"] == "numeric" and len(age["edges"]) == 9  # ten bins, every decile apart
    assert all(0.07 < share < 0.13 for share in age["shares"][:-1])
    assert age["shares"][-1] == 0  # training rows have no missing age
    labels = drift.bin_labels(age)
    assert labels[0] == "<= 22" and labels[1] == "(22, 26]" and labels[-2] == "> 58"
    # Zero for 92% of rows: one edge, and the rows with a gain in a bin of their own.
    gain = training_profile["features"]["capital-gain"]
    assert gain["edges"] == [0.0]
    assert drift.bin_labels(gain) == ["<= 0", "> 0", "(missing)"]
    assert 0.08 < gain["shares"][1] < 0.09


def test_categories_fold_rare_ones_into_other_and_keep_missing_apart(training_profile):
    workclass = training_profile["features"]["workclass"]
    assert workclass["categories"][0] == "Private"
    assert "Never-worked" not in workclass["categories"]  # 7 rows of 32,561
    shares = dict(zip(drift.bin_labels(workclass), workclass["shares"]))
    assert 0 < shares["(other)"] < 0.005
    assert 0.05 < shares["(missing)"] < 0.06  # the "?" rows


def test_a_sample_of_adult_test_has_a_low_psi_on_every_feature(training_profile,
                                                                held_out_sample):
    result = drift.psi(training_profile, held_out_sample)
    assert max(f["psi"] for f in result.values()) < 0.1, psi_of(training_profile,
                                                                 held_out_sample)
    assert drift.drifted(result) == []


@pytest.mark.parametrize("feature, shift", [
    ("age", lambda row: dict(row, age=row["age"] + 15)),
    ("sex", lambda row: dict(row, sex={"Male": "Female", "Female": "Male"}[row["sex"]])),
    ("workclass", lambda row: dict(row, workclass="Self-emp-inc")),
], ids=["age+15", "sex swapped", "workclass all self-employed"])
def test_a_shifted_feature_drifts_and_the_others_do_not(training_profile, held_out_sample,
                                                        feature, shift):
    result = drift.psi(training_profile, [shift(row) for row in held_out_sample])
    assert result[feature]["psi"] > drift.THRESHOLD and result[feature]["drifted"]
    others = {name: f["psi"] for name, f in result.items() if name != feature}
    assert max(others.values()) < 0.1, others
    assert drift.drifted(result) == [feature]


SMALL = drift.profile(
    [{"n": n, "c": c} for n, c in zip(range(1, 101), ["a"] * 60 + ["b"] * 39 + ["rare"])],
    numeric=["n"], categorical=["c"], rare=0.05)


def test_small_profile_bins():
    assert SMALL["features"]["n"]["edges"] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert SMALL["features"]["n"]["shares"] == [0.1] * 10 + [0]
    assert SMALL["features"]["c"] == {"kind": "categorical", "categories": ["a", "b"],
                                      "shares": [0.6, 0.39, 0.01, 0]}


def test_the_rows_of_the_profile_itself_have_no_drift():
    rows = [{"n": n, "c": c} for n, c in zip(range(1, 101), ["a"] * 60 + ["b"] * 39 + ["rare"])]
    assert psi_of(SMALL, rows) == {"n": 0, "c": 0}


def test_unseen_categories_count_as_other_and_garbage_numbers_as_missing():
    rows = [{"n": 5, "c": "never seen"}, {"n": "12", "c": "?"}, {"n": True, "c": ""},
            {"n": None, "c": None}, {"n": float("nan"), "c": " a "}, {"c": 7}, "not a row"]
    bins = {name: {b["bin"]: b["actual"] for b in f["bins"]}
            for name, f in drift.psi(SMALL, rows).items()}
    assert bins["n"]["<= 10"] == round(1 / 7, 6)
    assert bins["n"]["(missing)"] == round(6 / 7, 6)  # a string, a bool, null, NaN, absent
    assert bins["c"]["(other)"] == round(2 / 7, 6)  # an unseen category, a number
    assert bins["c"]["(missing)"] == round(4 / 7, 6)  # "?", "", null, not a row
    assert bins["c"]["a"] == round(1 / 7, 6)  # " a " is "a", as preprocessing reads it


def test_an_empty_bin_counts_as_epsilon_so_the_psi_stays_finite():
    rows = [{"n": 1, "c": "a"}] * 10  # every row in the first bin; c all "a"
    result = drift.psi(SMALL, rows)
    eps = drift.EPSILON
    expected_n = (1 - 0.1) * math.log(1 / 0.1) + 9 * (eps - 0.1) * math.log(eps / 0.1)
    assert result["n"]["psi"] == pytest.approx(expected_n, abs=1e-5)
    expected_c = ((1 - 0.6) * math.log(1 / 0.6) + (eps - 0.39) * math.log(eps / 0.39)
                  + (eps - 0.01) * math.log(eps / 0.01))  # the empty missing bins add 0
    assert result["c"]["psi"] == pytest.approx(expected_c, abs=1e-5)


def test_without_rows_there_is_no_psi_only_the_expected_shares():
    result = drift.psi(SMALL, [])
    assert result["n"]["psi"] is None and result["n"]["drifted"] is False
    assert [b["expected"] for b in result["n"]["bins"]] == [0.1] * 10 + [0]
    assert {b["actual"] for b in result["c"]["bins"]} == {None}


@pytest.mark.parametrize("profile, problem", [
    ([], "must be an object"),
    ({}, "features: must be an object of 1 to 200 features"),
    ({"features": {"n": {"kind": "ordinal"}}}, "features.n.kind: must be"),
    ({"features": {"n": {"kind": "numeric", "edges": [2, 1], "shares": [0.5, 0.5, 0, 0]}}},
     "features.n.edges: must increase strictly"),
    ({"features": {"n": {"kind": "numeric", "edges": [True], "shares": [1, 0, 0]}}},
     "features.n.edges: must be finite numbers"),
    ({"features": {"n": {"kind": "numeric", "edges": [1], "shares": [1, 0]}}},
     "features.n.shares: must be a list of 3 shares"),
    ({"features": {"n": {"kind": "numeric", "edges": [1], "shares": [0.5, 0.2, 0]}}},
     "features.n.shares: must add up to 1"),
    ({"features": {"c": {"kind": "categorical", "categories": ["a", "a"],
                         "shares": [0.5, 0.5, 0, 0]}}}, "must not repeat a category"),
    ({"features": {"c": {"kind": "categorical", "categories": ["a"],
                         "shares": [1.5, -0.5, 0]}}}, "must be numbers between 0 and 1"),
])
def test_a_profile_of_another_shape_is_refused_with_its_faults_named(profile, problem):
    assert any(problem in found for found in drift.profile_problems(profile)), \
        drift.profile_problems(profile)
    with pytest.raises(drift.ProfileError, match="must"):
        drift.psi(profile, [{"n": 1}])
