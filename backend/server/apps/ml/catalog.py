"""The algorithm classes the registry may serve: an explicit list, looked up by name.

A model version's ``code`` names its class. The registry never imports whatever module a client
names (importing runs the module's code); it looks the name up here, and a name that is not
listed is refused when the model is registered and again when it is loaded.
"""
from __future__ import annotations

from apps.ml.base import Algorithm
from apps.ml.income_classifier import CLASSIFIERS
from apps.ml.income_classifier.uploaded import UploadedIncomeClassifier

# The built-in classifiers, and the one class every uploaded ONNX model is served by.
ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.code(): cls for cls in (*CLASSIFIERS, UploadedIncomeClassifier)}


class UnknownAlgorithm(LookupError):
    def __init__(self, code: str):
        self.code = code
        super().__init__(f"unknown algorithm {code!r}; the registered algorithms are: "
                         + ", ".join(sorted(ALGORITHMS)))


def algorithm_class(code: str) -> type[Algorithm]:
    try:
        return ALGORITHMS[code]
    except (KeyError, TypeError):
        raise UnknownAlgorithm(code) from None
