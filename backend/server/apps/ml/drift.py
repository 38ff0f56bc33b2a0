"""Drift: how far the inputs a model serves have moved from the data it was trained on.

Training summarizes each feature's distribution once (``profile``) as plain JSON, stored in the
training manifest and on the model's record; serving compares the last requests' rows with it by
the Population Stability Index (``psi``), per feature:

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

``expected`` is a bin's share of the training rows, ``actual`` its share of the served rows.
Below 0.1 is usually read as no change, 0.1 to 0.2 as a moderate one, and above ``THRESHOLD``
(0.2) as a shift worth a look.

Bins. A numeric feature is cut at the training data's deciles, deduplicated, into right-closed
bins whose first and last are open-ended, so any number has a bin. Right-closed because a value
that fills several deciles (capital-gain is 0 in 92% of rows) then fills the bin ending at it and
the rest stays apart: "<= 0" and "> 0", where left-closed bins would put every row in one.
A categorical feature has a bin per category holding at least ``RARE`` (0.5%) of the training
rows, an ``OTHER`` bin for the rarer ones and for any category training never saw, and a
``MISSING`` bin (null, "" or "?", as preprocessing reads them). A numeric value that is not a
finite number (a string, a boolean, null) counts in the numeric feature's ``MISSING`` bin, which
training rows leave empty: the model could not have scored it.

Small samples. The PSI of a few rows is biased upward (a bin's share of 30 rows is coarse): 30
to 100 rows drawn from adult.test itself flagged some feature in most windows, 300 in none. A
feature is therefore flagged only once the window holds ``MIN_ROWS_PER_BIN`` (20) rows for each
of its bins; below that its PSI is reported, with ``enough`` false, and never flagged.

An empty bin would make the logarithm infinite, so inside the sum each share is floored at
``EPSILON`` (1e-4); the shares reported are the true ones. A bin empty on both sides adds 0.

A profile is plain data: ``{"rows": n, "features": {name: spec}}``, where a numeric spec is
``{"kind": "numeric", "edges": [...], "shares": [...]}`` (one share per bin, then the missing
share) and a categorical one ``{"kind": "categorical", "categories": [...], "shares": [...]}``
(one share per category, then other, then missing). ``profile_problems`` checks that shape, for
profiles that come from outside training (the API).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

THRESHOLD = 0.2
MIN_ROWS_PER_BIN = 20
EPSILON = 1e-4
RARE = 0.005
DECILES = 10
NUMERIC, CATEGORICAL = "numeric", "categorical"
OTHER, MISSING = "(other)", "(missing)"
# A profile from outside training is held to these (a feature costs a pass over every row).
MAX_FEATURES = 200
MAX_BINS = 200
MAX_NAME_LENGTH = 100
# Shares are rounded to this many decimals; they must add up to 1 within this tolerance.
DECIMALS = 6
SUM_TOLERANCE = 1e-3


class ProfileError(ValueError):
    """A profile that is not of the shape ``profile`` makes; ``problems`` names each fault."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _is_missing_category(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "?"))


def _value(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, Mapping) else None


def _numbers(rows: Sequence[Any], name: str) -> np.ndarray:
    """One feature of every row as floats; NaN where it is not a finite number."""
    values = (_value(row, name) for row in rows)
    return np.fromiter((float(v) if _is_number(v) else math.nan for v in values), dtype=float,
                       count=len(rows))


def _numeric_counts(spec: Mapping[str, Any], rows: Sequence[Any], name: str) -> np.ndarray:
    """Rows per bin: one per interval of ``edges``, then missing."""
    values = _numbers(rows, name)
    missing = np.isnan(values)
    # side="left": edges[i - 1] < value <= edges[i], the right-closed bins.
    bins = np.searchsorted(np.asarray(spec["edges"], dtype=float), values[~missing], side="left")
    counts = np.bincount(bins, minlength=len(spec["edges"]) + 1)
    return np.append(counts, missing.sum())


def _categorical_counts(spec: Mapping[str, Any], rows: Sequence[Any], name: str) -> np.ndarray:
    """Rows per bin: one per category, then other, then missing."""
    index = {category: i for i, category in enumerate(spec["categories"])}
    other, missing = len(index), len(index) + 1

    def bin_of(value: Any) -> int:
        if _is_missing_category(value):
            return missing
        return index.get(value.strip(), other) if isinstance(value, str) else other

    bins = np.fromiter((bin_of(_value(row, name)) for row in rows), dtype=np.int64,
                       count=len(rows))
    return np.bincount(bins, minlength=len(index) + 2)


def _shares(counts: np.ndarray, total: int) -> list[float]:
    return [round(float(c) / total, DECIMALS) for c in counts]


def _numeric_spec(rows: Sequence[Any], name: str, bins: int) -> dict:
    values = _numbers(rows, name)
    finite = values[~np.isnan(values)]
    edges: list[float] = []
    if finite.size:
        # inverted_cdf: each edge is a value of the data, so "<= 22" means what it says.
        quantiles = np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf")
        edges = [float(edge) for edge in np.unique(quantiles)]
    spec = {"kind": NUMERIC, "edges": edges}
    spec["shares"] = _shares(_numeric_counts(spec, rows, name), len(rows))
    return spec


def _categorical_spec(rows: Sequence[Any], name: str, rare: float) -> dict:
    counts = Counter(value.strip() for value in (_value(row, name) for row in rows)
                     if isinstance(value, str) and not _is_missing_category(value))
    # Most frequent first (ties by name), so the stored profile reads as a frequency table.
    kept = sorted((c for c, n in counts.items() if n / len(rows) >= rare),
                  key=lambda c: (-counts[c], c))
    spec = {"kind": CATEGORICAL, "categories": kept}
    spec["shares"] = _shares(_categorical_counts(spec, rows, name), len(rows))
    return spec


def profile(rows: Sequence[Mapping[str, Any]], numeric: Sequence[str],
            categorical: Sequence[str], bins: int = DECILES, rare: float = RARE) -> dict:
    """Each feature's distribution over ``rows`` (the training data), as plain JSON data."""
    if not rows:
        raise ValueError("a profile needs at least one row")
    if not 2 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be between 2 and {MAX_BINS}, got {bins}")
    features = {name: _numeric_spec(rows, name, bins) for name in numeric}
    features.update({name: _categorical_spec(rows, name, rare) for name in categorical})
    return {"rows": len(rows), "features": features}


def _number_label(value: float) -> str:
    return f"{value:.6g}"


def bin_labels(spec: Mapping[str, Any]) -> list[str]:
    """What each bin of a feature holds, in the order of its shares: "<= 22", "(22, 26]",
    "> 58", "Private", "(other)", "(missing)"."""
    if spec["kind"] == CATEGORICAL:
        return [*spec["categories"], OTHER, MISSING]
    edges = [_number_label(edge) for edge in spec["edges"]]
    if not edges:
        return ["any number", MISSING]
    middle = [f"({low}, {high}]" for low, high in zip(edges, edges[1:])]
    return [f"<= {edges[0]}", *middle, f"> {edges[-1]}", MISSING]


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    expected, actual = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi(profile: Mapping[str, Any], rows: Sequence[Any]) -> dict[str, dict]:
    """Per feature of ``profile``, in its order: the PSI of ``rows`` against it (None without
    rows), whether it is above ``THRESHOLD``, and each bin's expected and actual shares.

    A row that is not an object counts as missing in every feature. ProfileError if ``profile``
    is not of the shape ``profile`` makes.
    """
    problems = profile_problems(profile)
    if problems:
        raise ProfileError(problems)
    result = {}
    for name, spec in profile["features"].items():
        expected = np.asarray(spec["shares"], dtype=float)
        labels = bin_labels(spec)
        if not rows:
            result[name] = {"psi": None, "drifted": False, "enough": False, "bins": [
                {"bin": label, "expected": e, "actual": None}
                for label, e in zip(labels, spec["shares"])]}
            continue
        count = _numeric_counts if spec["kind"] == NUMERIC else _categorical_counts
        actual = count(spec, rows, name) / len(rows)
        value = round(_psi(expected, actual), DECIMALS)
        enough = len(rows) >= MIN_ROWS_PER_BIN * len(expected)
        result[name] = {"psi": value, "drifted": enough and value > THRESHOLD,
                        "enough": enough, "bins": [
            {"bin": label, "expected": e, "actual": round(float(a), DECIMALS)}
            for label, e, a in zip(labels, spec["shares"], actual)]}
    return result


def drifted(result: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The features of a ``psi`` result above the threshold, in its order."""
    return [name for name, feature in result.items() if feature["drifted"]]


def _is_number(value: Any) -> bool:
    """A finite int or float (bool is an int subclass, but not a number preprocessing accepts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def _spec_problems(name: str, spec: Any) -> list[str]:
    where = f"features.{name}"
    if not isinstance(spec, Mapping):
        return [f"{where}: must be an object"]
    kind = spec.get("kind")
    if kind not in (NUMERIC, CATEGORICAL):
        return [f"{where}.kind: must be {NUMERIC!r} or {CATEGORICAL!r}"]
    key = "edges" if kind == NUMERIC else "categories"
    values, shares = spec.get(key), spec.get("shares")
    if not isinstance(values, list) or len(values) > MAX_BINS:
        return [f"{where}.{key}: must be a list of at most {MAX_BINS} items"]
    if kind == NUMERIC:
        if not all(_is_number(v) for v in values):
            return [f"{where}.edges: must be finite numbers"]
        if any(low >= high for low, high in zip(values, values[1:])):
            return [f"{where}.edges: must increase strictly"]
    else:
        if not all(isinstance(v, str) and 0 < len(v) <= MAX_NAME_LENGTH for v in values):
            return [f"{where}.categories: must be strings of 1 to {MAX_NAME_LENGTH} characters"]
        if len(set(values)) != len(values):
            return [f"{where}.categories: must not repeat a category"]
    # Numeric: a bin per interval and one for missing; categorical: other and missing.
    size = len(values) + 2
    if not isinstance(shares, list) or len(shares) != size:
        return [f"{where}.shares: must be a list of {size} shares (one per bin, in order, "
                f"then {'missing' if kind == NUMERIC else 'other, then missing'})"]
    if not all(_is_number(s) and 0 <= s <= 1 for s in shares):
        return [f"{where}.shares: must be numbers between 0 and 1"]
    if abs(sum(shares) - 1) > SUM_TOLERANCE:
        return [f"{where}.shares: must add up to 1, they add up to {sum(shares):.6g}"]
    return []


def profile_problems(profile: Any) -> list[str]:
    """What makes ``profile`` unlike one ``profile`` makes, per place; empty if nothing."""
    if not isinstance(profile, Mapping):
        return ["must be an object with the features' distributions under 'features'"]
    features = profile.get("features")
    if not isinstance(features, Mapping) or not 0 < len(features) <= MAX_FEATURES:
        return [f"features: must be an object of 1 to {MAX_FEATURES} features"]
    problems = []
    for name, spec in features.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            problems.append(f"features: a feature name must have 1 to {MAX_NAME_LENGTH} "
                            f"characters")
            continue
        problems.extend(_spec_problems(name, spec))
    return problems
