"""The algorithm contract the registry serves: preprocess -> predict -> postprocess.

An algorithm is built from the bytes of one artifact and its format (``load``), then answers
``compute_predictions`` for a list of JSON objects with one inference call for the whole list;
``compute_prediction`` is the list of one. Loading is kept apart from the registry's metadata,
as MLflow keeps ``load_context`` apart from the model version it belongs to.
"""
from __future__ import annotations

from typing import Any

# The artifact formats a model version may have: ONNX, served by onnxruntime and never
# unpickled; joblib (a pickle), the research artifact, still served for versions that have it.
ONNX, JOBLIB = "onnx", "joblib"
FORMATS = (ONNX, JOBLIB)


class InputError(ValueError):
    """The input cannot be served; ``problems`` names each thing that is wrong with it."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class RowsError(InputError):
    """Several rows cannot be served: ``by_row`` maps each bad row's index to its problems."""

    def __init__(self, by_row: dict[int, list[str]]):
        self.by_row = by_row
        super().__init__([f"[{index}] {problem}" for index, problems in by_row.items()
                          for problem in problems])


class AnswerError(ValueError):
    """A model answered something the service cannot store or send: a label outside its classes,
    or a probability outside [0, 1] (NaN included)."""


def check_answers(answers: list[dict[str, Any]], classes: list[str]) -> list[dict[str, Any]]:
    """``answers`` if each has a label of ``classes`` and a probability in [0, 1], or
    AnswerError naming the first that does not."""
    for answer in answers:
        probability = answer.get("probability")
        if answer.get("label") not in classes or not (
                isinstance(probability, float) and 0.0 <= probability <= 1.0):
            raise AnswerError(f"the model answered label {answer.get('label')!r} with probability "
                              f"{probability!r}; its classes are "
                              + ", ".join(repr(c) for c in classes))
    return answers


class Algorithm:
    """Base class: subclasses implement ``load`` and the three steps, each over a list of rows."""

    classes: list[str] = []

    @classmethod
    def code(cls) -> str:
        """The name the registry stores this class by (its import path), listed in catalog.py."""
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def load(cls, data: bytes, artifact_format: str) -> "Algorithm":
        """Build the algorithm from its artifact's bytes, in one of ``FORMATS``."""
        raise NotImplementedError

    def preprocess(self, rows: list[Any]) -> Any:
        """The model's input for ``rows``; RowsError naming every bad row and field."""
        raise NotImplementedError

    def predict(self, features: Any) -> Any:
        raise NotImplementedError

    def postprocess(self, prediction: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def compute_predictions(self, rows: list[Any]) -> list[dict[str, Any]]:
        """The answers to ``rows``, each checked (``check_answers``): every model, built in or
        uploaded, at load's probe and on every request."""
        return check_answers(self.postprocess(self.predict(self.preprocess(rows))), self.classes)

    def compute_prediction(self, row: Any) -> dict[str, Any]:
        return self.compute_predictions([row])[0]
