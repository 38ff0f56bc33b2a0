"""Adult census features: validation, missing-value filling and categorical encoding.

One implementation serves both training (research/train.py, over every training row) and
prediction (one JSON object per request), in plain Python and numpy: a dict lookup per feature is
far cheaper per request than building a pandas frame.

Categorical values may be missing (``null`` or ``"?"`` as in the data files) and are filled with
the training mode, and hold at most ``MAX_CATEGORY_LENGTH`` characters; numeric features are
always required and must lie within float32's finite range, which is what the trees compare.

Fitted parameters are plain data (``{"fill": {...}, "codes": {...}}``) stored inside each model's
artifact. Categories are ordinal codes in sorted order; a category never seen in training encodes
as -1, which trees treat as "below every known category" instead of crashing.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from apps.ml.base import InputError, RowsError

NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL = (
    "workclass", "education", "marital-status", "occupation",
    "relationship", "race", "sex", "native-country",
)
# The 14 raw features, in the order of the data files (the model's column order).
FEATURES = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country",
)
TARGET = "income"
# The tutorial's sample row, as clients post it: a 37-year-old married craft-repair worker,
# 68 hours a week (true label <=50K). Tests and benchmarks send it; the API's pages show it.
EXAMPLE_ROW = {
    "age": 37, "workclass": "Private", "fnlwgt": 34146, "education": "HS-grad",
    "education-num": 9, "marital-status": "Married-civ-spouse", "occupation": "Craft-repair",
    "relationship": "Husband", "race": "White", "sex": "Male", "capital-gain": 0,
    "capital-loss": 0, "hours-per-week": 68, "native-country": "United-States",
}
MISSING = "?"
UNKNOWN_CODE = -1.0
# Trees compare features as float32: a number beyond its range cannot be scored.
FLOAT32_MAX = 3.4028234663852886e38
# The longest Adult category is 26 characters; a longer value is not a category of this data.
MAX_CATEGORY_LENGTH = 100


def is_missing(value: Any) -> bool:
    return value is None or value == MISSING or value == ""


def fit(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Learn the fill value (the training mode) and the codes of each categorical feature."""
    counters = {name: Counter() for name in CATEGORICAL}
    for row in rows:
        for name in CATEGORICAL:
            if not is_missing(row[name]):
                counters[name][row[name]] += 1
    fill: dict[str, Any] = {}
    codes: dict[str, dict[str, float]] = {}
    for name, counter in counters.items():
        # most_common breaks ties by first occurrence; sort first so the mode is deterministic.
        fill[name] = max(sorted(counter), key=counter.__getitem__)
        codes[name] = {category: float(i) for i, category in enumerate(sorted(counter))}
    return {"fill": fill, "codes": codes}


def _show(value: Any) -> str:
    """A value as an error message may quote it: short, whatever the client sent."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(name: str, value: Any, problems: list[str]) -> float:
    # bool is an int subclass; a JSON true/false is a mistake, not the number 1/0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"'{name}' must be a number, got {type(value).__name__} {_show(value)}")
        return math.nan
    # Compared before any conversion: float() of a 400-digit integer overflows.
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"'{name}' must be a finite number, got {value!r}")
    elif abs(value) > FLOAT32_MAX:
        problems.append(f"'{name}' is out of range: a number between -{FLOAT32_MAX:.4g} and "
                        f"{FLOAT32_MAX:.4g} is expected")
    else:
        return float(value)
    return math.nan


def validate_rows(rows: Sequence[Any]) -> None:
    """Raise RowsError naming every bad row of a batch and what is wrong with each (validate)."""
    problems = {}
    for index, row in enumerate(rows):
        try:
            validate(row)
        except InputError as exc:
            problems[index] = exc.problems
    if problems:
        raise RowsError(problems)


def validate(input_data: Any) -> None:
    """Raise InputError naming every missing, unknown or mistyped feature of one input object."""
    if not isinstance(input_data, Mapping):
        raise InputError([f"a row must be a JSON object of the {len(FEATURES)} Adult features, "
                          f"got {type(input_data).__name__}"])
    problems: list[str] = []
    missing = [name for name in FEATURES if name not in input_data]
    if missing:
        problems.append("missing feature(s): " + ", ".join(missing))
    unknown = sorted(set(input_data) - set(FEATURES))
    if unknown:
        shown = ", ".join(_show(name)[1:-1] for name in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        problems.append(f"unknown feature(s): {shown}{more} (expected: {', '.join(FEATURES)})")
    for name in NUMERIC:
        if name in input_data:
            _number(name, input_data[name], problems)
    for name in CATEGORICAL:
        value = input_data.get(name)
        if name in input_data and value is not None and not isinstance(value, str):
            problems.append(
                f"'{name}' must be a string, got {type(value).__name__} {_show(value)}")
        elif isinstance(value, str) and len(value) > MAX_CATEGORY_LENGTH:
            problems.append(f"'{name}' is {len(value)} characters long; a category has at most "
                            f"{MAX_CATEGORY_LENGTH}")
    if problems:
        raise InputError(problems)


def encode_row(row: Mapping[str, Any], params: Mapping[str, Any]) -> list[float]:
    """One validated row as the model's 14 floats: missing values filled, categories coded."""
    fill, codes = params["fill"], params["codes"]
    out = []
    for name in FEATURES:
        value = row[name]
        if name in codes:
            if is_missing(value):
                value = fill[name]
            out.append(codes[name].get(value.strip(), UNKNOWN_CODE))
        else:
            out.append(float(value))
    return out


def transform(rows: Iterable[Mapping[str, Any]], params: Mapping[str, Any]) -> np.ndarray:
    """Valid rows as the model's float32 matrix (what the trees compare, in every artifact)."""
    return np.array([encode_row(row, params) for row in rows], dtype=np.float32)
