"""Shared behaviour of the income classifiers: JSON objects in, one inference call, labels out.

A classifier scores the encoded rows with one of two artifacts of the same fitted model:

- ONNX (served by default): the scikit-learn model compiled by skl2onnx at training time, with
  the preprocessing parameters and class order in the file's metadata. onnxruntime runs it (one
  thread: a gunicorn worker is one process per core) and nothing is unpickled.
- joblib: the fitted estimator pickled with the same parameters, the research artifact. Loading
  it runs whatever the file says, so the registry loads it only from the artifact store, from
  bytes it has checked against the sha256 recorded at registration.

Both see the same float32 matrix (scikit-learn's trees cast to float32 themselves), and a row's
label is ``>50K`` when its probability is above one half, whichever artifact scored it.
"""
from __future__ import annotations

import io
import json
from typing import Any, Callable

import numpy as np

from apps.ml.base import JOBLIB, ONNX, Algorithm
from apps.ml.income_classifier import preprocessing

CLASSES = ["<=50K", ">50K"]
POSITIVE = ">50K"
ONNX_INPUT = "X"
ONNX_PROBABILITIES = "probabilities"

# Encoded rows (n x 14, float32) -> the probability of POSITIVE for each (n).
Scorer = Callable[[np.ndarray], np.ndarray]


def onnx_session(data: bytes):
    """An onnxruntime session for a model's bytes, as every worker runs one: one thread, on the
    CPU (a worker is one process per core)."""
    import onnxruntime  # imported here: a joblib-only worker never loads it

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


class IncomeClassifier(Algorithm):
    name: str = ""
    version: str = "0.0.1"
    description: str = ""
    classes = CLASSES

    def __init__(self, score: Scorer, params: dict[str, Any], estimator: Any = None):
        self._score = score
        self.params = params
        self.estimator = estimator  # the fitted scikit-learn model, when there is one

    @staticmethod
    def make_estimator() -> Any:
        raise NotImplementedError

    @classmethod
    def from_estimator(cls, estimator: Any, params: dict[str, Any]) -> "IncomeClassifier":
        # Requests are small: parallel tree evaluation costs more in thread start-up than it saves.
        if hasattr(estimator, "n_jobs"):
            estimator.n_jobs = 1
        positive = list(estimator.classes_).index(POSITIVE)
        return cls(lambda x: estimator.predict_proba(x)[:, positive], params, estimator)

    @classmethod
    def load(cls, data: bytes, artifact_format: str) -> "IncomeClassifier":
        """The classifier, once it has scored a row: a file that loads but cannot serve (another
        model's inputs or outputs) fails here, where the registry refuses it (503), and not on
        every request."""
        if artifact_format == ONNX:
            algorithm = cls._from_onnx(data)
        elif artifact_format == JOBLIB:
            import joblib  # imported here: an ONNX-only worker never loads scikit-learn

            bundle = joblib.load(io.BytesIO(data))
            algorithm = cls.from_estimator(bundle["estimator"], bundle["preprocessing"])
        else:
            raise ValueError(f"unknown artifact format {artifact_format!r}")
        scored = algorithm.predict(np.zeros((1, len(preprocessing.FEATURES)), np.float32))
        if scored.shape != (1,) or not 0.0 <= float(scored[0]) <= 1.0:
            raise ValueError(f"the model scored a row as {scored!r}, not one probability")
        return algorithm

    @classmethod
    def _from_onnx(cls, data: bytes) -> "IncomeClassifier":
        session = onnx_session(data)
        meta = session.get_modelmeta().custom_metadata_map
        positive = json.loads(meta["classes"]).index(POSITIVE)

        def score(x: np.ndarray) -> np.ndarray:
            return session.run([ONNX_PROBABILITIES], {ONNX_INPUT: x})[0][:, positive]

        return cls(score, json.loads(meta["preprocessing"]))

    def dump(self, path: str) -> None:
        """The joblib artifact (research, and the format older versions serve)."""
        import joblib

        joblib.dump({"estimator": self.estimator, "preprocessing": self.params,
                     "classes": self.classes}, path)

    def dump_onnx(self, path: str) -> None:
        """The ONNX artifact: the estimator compiled, the preprocessing in the metadata."""
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType

        model = to_onnx(self.estimator, name=type(self).__name__,
                        initial_types=[(ONNX_INPUT, FloatTensorType([None, len(
                            preprocessing.FEATURES)]))],
                        options={id(self.estimator): {"zipmap": False}})
        for key, value in (("preprocessing", self.params),
                           ("classes", [str(c) for c in self.estimator.classes_]),
                           ("algorithm", self.code())):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        with open(path, "wb") as out:
            out.write(model.SerializeToString())

    def preprocess(self, rows: list[Any]) -> np.ndarray:
        preprocessing.validate_rows(rows)
        return preprocessing.transform(rows, self.params)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self._score(features)

    def postprocess(self, prediction: np.ndarray) -> list[dict[str, Any]]:
        return [{"probability": p, "label": POSITIVE if p > 0.5 else CLASSES[0]}
                for p in prediction.tolist()]
