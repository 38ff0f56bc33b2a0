"""Shared behaviour of the income classifiers: one artifact file, one JSON object in, a label out.

The artifact is a joblib file holding the fitted scikit-learn estimator, the preprocessing
parameters and the class labels. Unpickling it runs whatever the file says, so only the registry
loads it, and only from the artifact store (which only research/train.py writes), from bytes it
has checked against the sha256 recorded at registration.
"""
from __future__ import annotations

from typing import Any, BinaryIO

import joblib
import numpy as np

from apps.ml.base import Algorithm
from apps.ml.income_classifier import preprocessing

CLASSES = ["<=50K", ">50K"]
POSITIVE = ">50K"


class IncomeClassifier(Algorithm):
    name: str = ""
    version: str = "0.0.1"
    description: str = ""
    classes = CLASSES

    def __init__(self, estimator: Any, params: dict[str, Any]):
        self.estimator = estimator
        self.params = params
        # A request is one row: parallel tree evaluation costs more in thread start-up than it saves.
        if hasattr(estimator, "n_jobs"):
            estimator.n_jobs = 1
        self._positive_column = list(estimator.classes_).index(POSITIVE)

    @staticmethod
    def make_estimator() -> Any:
        raise NotImplementedError

    @classmethod
    def load(cls, source: str | BinaryIO) -> "IncomeClassifier":
        bundle = joblib.load(source)
        return cls(bundle["estimator"], bundle["preprocessing"])

    def dump(self, path: str) -> None:
        joblib.dump(
            {"estimator": self.estimator, "preprocessing": self.params, "classes": self.classes},
            path,
        )

    def preprocess(self, input_data: Any) -> np.ndarray:
        preprocessing.validate(input_data)
        return np.array([preprocessing.encode_row(input_data, self.params)], dtype=np.float64)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(features)[:, self._positive_column]

    def postprocess(self, prediction: np.ndarray) -> dict[str, Any]:
        probability = float(prediction[0])
        return {"probability": probability, "label": POSITIVE if probability > 0.5 else CLASSES[0]}
