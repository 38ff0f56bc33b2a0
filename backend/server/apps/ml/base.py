"""The algorithm contract the registry serves: preprocess -> predict -> postprocess.

An algorithm is loaded from one artifact file (``load``) and then answers ``compute_prediction``
for one JSON object at a time. Loading is kept apart from the registry's metadata, as MLflow keeps
``load_context`` apart from the model version it belongs to.
"""
from __future__ import annotations

from typing import Any, BinaryIO


class InputError(ValueError):
    """The input cannot be served; ``problems`` names each thing that is wrong with it."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class Algorithm:
    """Base class: subclasses implement the three steps and ``load``."""

    classes: list[str] = []

    @classmethod
    def code(cls) -> str:
        """The name the registry stores this class by (its import path), listed in catalog.py."""
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def load(cls, source: str | BinaryIO) -> "Algorithm":
        """Build the algorithm from its artifact: a file path, or the artifact's bytes as a file."""
        raise NotImplementedError

    def preprocess(self, input_data: Any) -> Any:
        raise NotImplementedError

    def predict(self, features: Any) -> Any:
        raise NotImplementedError

    def postprocess(self, prediction: Any) -> dict[str, Any]:
        raise NotImplementedError

    def compute_prediction(self, input_data: Any) -> dict[str, Any]:
        return self.postprocess(self.predict(self.preprocess(input_data)))
