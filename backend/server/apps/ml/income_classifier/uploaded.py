"""Income classifiers trained outside the project and uploaded as ONNX files.

What such a file must be (checked when it is uploaded, by ``inspect`` and ``load``):

- an ONNX model using only the standard operator sets (``ai.onnx``, ``ai.onnx.ml``), with every
  weight inside the file: a reference to external data would make the loader read a file of the
  host's choosing, so it is refused;
- with one input per raw Adult feature, named as the feature (skl2onnx's spelling, ``-`` as
  ``_``, is accepted): the model carries its own preprocessing, as a scikit-learn Pipeline
  exported by skl2onnx does. Numeric features as float, double or integer tensors, categorical
  ones as string tensors, each of shape [N, 1] or [N]; a missing category reaches the model as
  ``"?"``, as in the data files;
- answering a label tensor and the class probabilities, as skl2onnx writes a classifier: a
  sequence of maps from class to probability (its default), or a float tensor [N, classes] whose
  columns follow the sorted classes (scikit-learn's ``classes_``); the classes must be the
  endpoint's, ``<=50K`` and ``>50K``.

The answer is the service's usual one: the model's own label, and the probability of ``>50K``.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from apps.ml.base import ONNX, Algorithm, InputError, RowsError
from apps.ml.income_classifier import preprocessing
from apps.ml.income_classifier.classifier import CLASSES, POSITIVE

STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}
NUMERIC_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                 "tensor(int64)": np.int64, "tensor(int32)": np.int32}
STRING_TYPE = "tensor(string)"
# Rows every uploaded model must answer before it is accepted: the example, and one with every
# category missing.
PROBE_ROWS = [dict(preprocessing.EXAMPLE_ROW),
              {**preprocessing.EXAMPLE_ROW, **{name: None for name in preprocessing.CATEGORICAL}}]


class UnsupportedModel(ValueError):
    """Why an uploaded file cannot serve the income endpoint, in the uploader's terms."""


def inspect(data: bytes) -> None:
    """Refuse a file that is not a self-contained ONNX model of the standard operator sets.

    Run once, at upload (it needs the ``onnx`` package, which serving does not import); the
    sha256 recorded then makes every later load the very bytes checked here.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise UnsupportedModel(f"the file is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise UnsupportedModel("the file is not an ONNX model (its graph has no nodes)")
    domains = {opset.domain for opset in model.opset_import}
    foreign = sorted(domains - STANDARD_DOMAINS)
    if foreign:
        raise UnsupportedModel(f"the model uses operators outside the standard sets "
                               f"(domains {', '.join(foreign)}); only ai.onnx and ai.onnx.ml "
                               f"are served")
    external = [t.name for t in _tensors(model.graph)
                if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data]
    if external:
        raise UnsupportedModel(f"the model keeps weights in external files ({external[0]}, ...); "
                               f"save it as one self-contained file")


def _tensors(graph):
    """Every tensor a graph and its subgraphs hold (initializers and constant attributes)."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


class UploadedIncomeClassifier(Algorithm):
    """An uploaded ONNX income classifier (see the module's docstring for what it must be)."""

    classes = CLASSES

    def __init__(self, session, feeds: list[tuple[str, str, Any, int]], label: str,
                 probabilities: str, zipmap: bool):
        self._session = session
        self._feeds = feeds  # (input name, feature, numpy dtype or object, rank)
        self._outputs = [label, probabilities]
        self._zipmap = zipmap

    @classmethod
    def load(cls, data: bytes, artifact_format: str) -> "UploadedIncomeClassifier":
        """The classifier, once it has answered the probe rows with the endpoint's classes;
        UnsupportedModel saying why otherwise."""
        if artifact_format != ONNX:
            raise UnsupportedModel(f"uploaded models are ONNX files, not {artifact_format}")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = onnxruntime.InferenceSession(data, options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's many failure types
            raise UnsupportedModel(f"onnxruntime cannot load the model: {_first_line(exc)}") \
                from None
        algorithm = cls(session, _feeds(session.get_inputs()), *_outputs(session.get_outputs()))
        try:
            answers = algorithm.compute_predictions(PROBE_ROWS)
        except UnsupportedModel:
            raise
        except Exception as exc:  # noqa: BLE001
            raise UnsupportedModel(f"the model fails on the 14 raw features: "
                                   f"{_first_line(exc)}") from None
        for answer in answers:
            if answer["label"] not in CLASSES or not 0.0 <= answer["probability"] <= 1.0:
                raise UnsupportedModel(
                    f"the model answers label {answer['label']!r} with probability "
                    f"{answer['probability']!r}; the endpoint's classes are "
                    + ", ".join(repr(c) for c in CLASSES))
        return algorithm

    def preprocess(self, rows: list[Any]) -> dict[str, np.ndarray]:
        problems = {}
        for index, row in enumerate(rows):
            try:
                preprocessing.validate(row)
            except InputError as exc:
                problems[index] = exc.problems
        if problems:
            raise RowsError(problems)
        feed = {}
        for name, feature, dtype, rank in self._feeds:
            if dtype is object:
                values = [preprocessing.MISSING if _missing(row.get(feature))
                          else str(row[feature]) for row in rows]
            else:
                values = [row[feature] for row in rows]
            array = np.array(values, dtype=dtype)
            feed[name] = array.reshape(-1, 1) if rank == 2 else array
        return feed

    def predict(self, features: dict[str, np.ndarray]) -> tuple[Any, Any]:
        labels, probabilities = self._session.run(self._outputs, features)
        return labels, probabilities

    def postprocess(self, prediction: tuple[Any, Any]) -> list[dict[str, Any]]:
        labels, probabilities = prediction
        if self._zipmap:
            positive = [float(row.get(POSITIVE, np.nan)) for row in probabilities]
        else:
            probabilities = np.asarray(probabilities)
            if probabilities.ndim != 2 or probabilities.shape[1] != len(CLASSES):
                raise UnsupportedModel(f"the probabilities have shape {probabilities.shape}, not "
                                       f"one column per class ({len(CLASSES)})")
            positive = probabilities[:, sorted(CLASSES).index(POSITIVE)].astype(float).tolist()
        return [{"probability": p, "label": str(label)}
                for label, p in zip(np.asarray(labels).ravel().tolist(), positive)]


def _missing(value: Any) -> bool:
    return value is None or value == "" or value == preprocessing.MISSING


# onnxruntime's messages name its source file and C++ function before saying what is wrong.
_RUNTIME_NOISE = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : |\S*onnxruntime_src\S* [^()]*\(.*?\) ")


def _first_line(exc: Exception) -> str:
    """The loader's reason, for the uploader: its first line, without the runtime's internals."""
    text = _RUNTIME_NOISE.sub("", str(exc).strip())
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def _feeds(inputs) -> list[tuple[str, str, Any, int]]:
    """How to feed each input: one per raw feature, of a type that feature can take."""
    by_feature = {}
    unknown = []
    for node in inputs:
        feature = next((f for f in preprocessing.FEATURES
                        if node.name in (f, f.replace("-", "_"))), None)
        if feature is None:
            unknown.append(node.name)
        else:
            by_feature[feature] = node
    missing = [f for f in preprocessing.FEATURES if f not in by_feature]
    if unknown or missing:
        raise UnsupportedModel(
            "the model must take the 14 raw features as 14 inputs named after them"
            + (f"; it lacks {', '.join(missing)}" if missing else "")
            + (f"; it has inputs that are not features: {', '.join(unknown)}" if unknown else ""))
    feeds = []
    for feature, node in by_feature.items():
        rank = len(node.shape or [])
        if rank not in (1, 2) or (rank == 2 and node.shape[1] not in (1, None, "None")):
            raise UnsupportedModel(f"input {node.name!r} has shape {node.shape}; expected "
                                   f"[N, 1] or [N]")
        if feature in preprocessing.CATEGORICAL:
            if node.type != STRING_TYPE:
                raise UnsupportedModel(f"input {node.name!r} is {node.type}; the categorical "
                                       f"feature {feature} is a string tensor")
            feeds.append((node.name, feature, object, rank))
        else:
            if node.type not in NUMERIC_TYPES:
                raise UnsupportedModel(f"input {node.name!r} is {node.type}; the numeric feature "
                                       f"{feature} is a float, double or integer tensor")
            feeds.append((node.name, feature, NUMERIC_TYPES[node.type], rank))
    return feeds


def _outputs(outputs) -> tuple[str, str, bool]:
    """The label output and the probabilities output, as skl2onnx names a classifier's."""
    if len(outputs) < 2:
        raise UnsupportedModel("the model must answer a label and class probabilities (two "
                               "outputs, as skl2onnx exports a classifier)")
    label, probabilities = outputs[0], outputs[1]
    if label.type not in (STRING_TYPE, "tensor(int64)"):
        raise UnsupportedModel(f"the model's first output ({label.name}) is {label.type}, not "
                               f"a label tensor")
    if probabilities.type.startswith("seq(map("):
        return label.name, probabilities.name, True
    if probabilities.type in ("tensor(float)", "tensor(double)"):
        return label.name, probabilities.name, False
    raise UnsupportedModel(f"the model's second output ({probabilities.name}) is "
                           f"{probabilities.type}, not class probabilities")
