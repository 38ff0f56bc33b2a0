"""The algorithms without Django: validation, encoding, and the trained classifiers."""
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from apps.ml.base import InputError, RowsError
from apps.ml.income_classifier import CLASSIFIERS, RandomForestIncomeClassifier
from apps.ml.income_classifier import preprocessing
from apps.ml.income_classifier.preprocessing import FEATURES, UNKNOWN_CODE

TRAIN_ROWS = [
    {**{name: 0 for name in preprocessing.NUMERIC}, "workclass": "Private", "education": "HS-grad",
     "marital-status": "Divorced", "occupation": "Sales", "relationship": "Own-child",
     "race": "White", "sex": "Male", "native-country": "United-States"},
    {**{name: 1 for name in preprocessing.NUMERIC}, "workclass": "State-gov", "education": "Masters",
     "marital-status": "Divorced", "occupation": "?", "relationship": "Husband",
     "race": "Black", "sex": "Female", "native-country": "?"},
    {**{name: 2 for name in preprocessing.NUMERIC}, "workclass": "Private", "education": "HS-grad",
     "marital-status": "Never-married", "occupation": "Sales", "relationship": "Husband",
     "race": "White", "sex": "Male", "native-country": "United-States"},
]


def test_fit_learns_the_mode_ignoring_missing_values_and_sorted_codes():
    params = preprocessing.fit(TRAIN_ROWS)
    assert params["fill"]["workclass"] == "Private"
    assert params["fill"]["occupation"] == "Sales"  # "?" is not a category
    assert params["codes"]["education"] == {"HS-grad": 0.0, "Masters": 1.0}
    assert "?" not in params["codes"]["native-country"]


def test_encode_fills_missing_with_mode_and_unseen_category_as_unknown():
    params = preprocessing.fit(TRAIN_ROWS)
    row = dict(TRAIN_ROWS[1], workclass=None, education="Doctorate", age=44)
    encoded = preprocessing.encode_row(row, params)
    assert len(encoded) == len(FEATURES)
    assert encoded[FEATURES.index("workclass")] == params["codes"]["workclass"]["Private"]
    assert encoded[FEATURES.index("occupation")] == params["codes"]["occupation"]["Sales"]
    assert encoded[FEATURES.index("education")] == UNKNOWN_CODE
    assert encoded[FEATURES.index("age")] == 44.0


def test_transform_matches_row_by_row_encoding():
    params = preprocessing.fit(TRAIN_ROWS)
    matrix = preprocessing.transform(TRAIN_ROWS, params)
    assert matrix.shape == (3, 14)
    np.testing.assert_array_equal(matrix[2], preprocessing.encode_row(TRAIN_ROWS[2], params))


@pytest.mark.parametrize("body, fragment", [
    ([1, 2], "must be a JSON object"),
    ("age=37", "must be a JSON object"),
    ({}, "missing feature(s): age, workclass"),
])
def test_validate_rejects_what_is_not_an_object_of_features(body, fragment, sample_row):
    with pytest.raises(InputError) as err:
        preprocessing.validate(body)
    assert fragment in str(err.value)


@pytest.mark.parametrize("field, value, fragment", [
    ("age", "37", "'age' must be a number, got str '37'"),
    ("age", True, "'age' must be a number, got bool True"),
    ("hours-per-week", None, "'hours-per-week' must be a number"),
    ("capital-gain", float("nan"), "'capital-gain' must be a finite number"),
    ("workclass", 3, "'workclass' must be a string, got int 3"),
])
def test_validate_names_each_mistyped_feature(sample_row, field, value, fragment):
    sample_row[field] = value
    with pytest.raises(InputError) as err:
        preprocessing.validate(sample_row)
    assert fragment in str(err.value)


def test_validate_names_missing_and_unknown_features_together(sample_row):
    del sample_row["education-num"]
    sample_row["education_num"] = 9
    with pytest.raises(InputError) as err:
        preprocessing.validate(sample_row)
    assert err.value.problems[0] == "missing feature(s): education-num"
    assert err.value.problems[1].startswith("unknown feature(s): education_num (expected: age,")


def test_validate_accepts_missing_categoricals(sample_row):
    sample_row["workclass"] = None
    sample_row["occupation"] = "?"
    preprocessing.validate(sample_row)


@pytest.fixture(scope="module")
def random_forest(manifest):
    entry = next(m for m in manifest["models"] if m["name"] == "random forest")
    artifact = Path(settings.ML_ARTIFACTS_DIR) / entry["artifact"]
    return RandomForestIncomeClassifier.load(artifact.read_bytes(), entry["format"])


def test_trained_random_forest_answers_the_tutorial_sample_with_low_income(random_forest,
                                                                            sample_row):
    result = random_forest.compute_prediction(sample_row)
    assert result["label"] == "<=50K"
    assert 0.0 <= result["probability"] < 0.5


def test_trained_random_forest_says_high_income_for_a_high_earner(random_forest, sample_row):
    sample_row.update({"education": "Doctorate", "education-num": 16, "capital-gain": 99999,
                       "occupation": "Prof-specialty", "age": 50, "hours-per-week": 50})
    result = random_forest.compute_prediction(sample_row)
    assert result == {"label": ">50K", "probability": result["probability"]}
    assert result["probability"] > 0.5


def test_unseen_category_and_missing_values_do_not_crash_prediction(random_forest, sample_row):
    sample_row.update({"native-country": "Atlantis", "workclass": None, "occupation": "?"})
    assert random_forest.compute_prediction(sample_row)["label"] in ("<=50K", ">50K")


def test_manifest_records_each_classifier_with_checksum_and_accuracy(manifest):
    entries = {m["name"]: m for m in manifest["models"]}
    assert set(entries) == {c.name for c in CLASSIFIERS}
    for classifier in CLASSIFIERS:
        entry = entries[classifier.name]
        assert entry["code"] == classifier.code()
        assert len(entry["sha256"]) == 64
        # The Adult benchmark: tree ensembles land well above the 76% majority baseline.
        assert 0.80 < entry["metrics"]["accuracy"] < 0.95
    assert manifest["libraries"]["scikit-learn"]


@pytest.fixture(scope="module")
def held_out():
    from research import adult

    return adult.load("adult.test")


@pytest.mark.parametrize("classifier", CLASSIFIERS, ids=lambda c: c.name)
def test_the_onnx_model_agrees_with_its_scikit_learn_model_on_every_held_out_row(
        classifier, manifest, held_out):
    """Same label on all 16,281 rows of adult.test, probabilities within 1e-5."""
    entry = next(m for m in manifest["models"] if m["name"] == classifier.name)
    store = Path(settings.ML_ARTIFACTS_DIR)
    compiled, original = (
        classifier.load((store / entry["files"][fmt]["file"]).read_bytes(), fmt)
        for fmt in ("onnx", "joblib"))
    rows = [{k: v for k, v in row.items() if k != preprocessing.TARGET} for row in held_out]
    by_onnx, by_sklearn = compiled.compute_predictions(rows), original.compute_predictions(rows)
    assert len(by_onnx) == len(rows) == 16281
    assert [a["label"] for a in by_onnx] == [a["label"] for a in by_sklearn]
    difference = max(abs(a["probability"] - b["probability"]) for a, b in zip(by_onnx, by_sklearn))
    assert difference < 1e-5


@pytest.mark.parametrize("change", [
    {"native-country": "Atlantis", "workclass": None, "occupation": "?"},  # unseen, missing
    {"capital-gain": 3.0e38, "age": -1e30},  # extreme, yet within float32
    {"education": "", "relationship": "?"},
])
def test_both_artifacts_treat_unusual_rows_alike(manifest, sample_row, change):
    entry = next(m for m in manifest["models"] if m["name"] == "random forest")
    store = Path(settings.ML_ARTIFACTS_DIR)
    row = dict(sample_row, **change)
    answers = [RandomForestIncomeClassifier.load((store / entry["files"][fmt]["file"])
                                                 .read_bytes(), fmt).compute_prediction(row)
               for fmt in ("onnx", "joblib")]
    assert answers[0]["label"] == answers[1]["label"]
    assert abs(answers[0]["probability"] - answers[1]["probability"]) < 1e-5


def test_a_batch_names_every_bad_row(random_forest, sample_row):
    rows = [sample_row, dict(sample_row, age="x"), 5, dict(sample_row)]
    with pytest.raises(RowsError) as err:
        random_forest.compute_predictions(rows)
    assert err.value.by_row == {1: ["'age' must be a number, got str 'x'"],
                                2: ["a row must be a JSON object of the 14 Adult features, "
                                    "got int"]}
