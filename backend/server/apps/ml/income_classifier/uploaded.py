"""Income classifiers trained outside the project and uploaded as ONNX files.

What such a file must be (checked when it is uploaded, by ``inspect`` and ``load``):

- an ONNX model of the operators scikit-learn models export to (``ai.onnx.ml``, and the
  ``ai.onnx`` operators in ``ALLOWED_OPS``: none that sizes a tensor from data, loops, or draws
  random numbers), with every weight inside the file: a reference to external data would make
  the loader read a file of the host, so it is refused;
- with one input per raw Adult feature, named as the feature (skl2onnx's spelling, ``-`` as
  ``_``, is accepted): the model carries its own preprocessing, as a scikit-learn Pipeline
  exported by skl2onnx does. Numeric features as float, double or integer tensors, categorical
  ones as string tensors, each of shape [N, 1] or [N]; a missing category reaches the model as
  ``"?"``, as in the data files; an integer input takes whole numbers in its range (a row with
  another number is a 400 naming it);
- answering a label tensor and the class probabilities, as skl2onnx writes a classifier: a
  sequence of maps from class to probability (its default), or a float tensor [N, classes] whose
  columns follow the sorted classes (scikit-learn's ``classes_``); the classes must be the
  endpoint's, ``<=50K`` and ``>50K``.

The answer is the service's usual one: the model's own label, and the probability of ``>50K``;
every answer is checked (a label of the endpoint's, a probability in [0, 1]), and a model that
answers anything else is refused for that request (503), never stored.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from apps.ml.base import ONNX, Algorithm, AnswerError, RowsError
from apps.ml.income_classifier import preprocessing
from apps.ml.income_classifier.classifier import CLASSES, POSITIVE, onnx_session

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


# The ai.onnx operators a model may use: what skl2onnx writes for scikit-learn's preprocessing,
# linear models, trees, boosting and neural networks. Left out on purpose: every operator that
# makes a tensor whose size comes from data rather than from the model's weights
# (ConstantOfShape, Expand, Tile, Range, Resize, Pad, ...), the control flow that could repeat
# one (Loop, Scan, If), and random generators: a small file could otherwise have every worker
# build gigabytes when it loads the model, or when a client sends a large number. Every
# ai.onnx.ml operator is allowed (each is bounded by the model's own parameters).
ALLOWED_OPS = frozenset("""
    Abs Add And ArgMax ArgMin Cast CastLike Ceil Clip Concat Constant Div Einsum Equal Erf Exp
    Flatten Floor Gather GatherElements Gemm Greater GreaterOrEqual Identity IsInf IsNaN
    LeakyRelu Less LessOrEqual Log LogSoftmax MatMul Max Mean Min Mod Mul Neg Not Or Pow
    Reciprocal ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Round Shape Sigmoid Sign Slice Softmax Softplus Split Sqrt
    Squeeze Sub Sum Tanh TopK Transpose Unsqueeze Where Xor
""".split())
ML_DOMAIN = "ai.onnx.ml"


def inspect(data: bytes) -> None:
    """Refuse a file that is not a self-contained ONNX model of the allowed operators.

    Run once, at upload (it needs the ``onnx`` package, which serving does not import); the
    sha256 recorded then makes every later load the very bytes checked here. Every message of
    the file is walked, so no tensor anywhere (initializers, sparse ones, attributes, subgraphs)
    may keep its data in an outside file: onnxruntime would read that file, relative to the
    worker's folder, and answer with its bytes.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise UnsupportedModel(f"the file is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise UnsupportedModel("the file is not an ONNX model (its graph has no nodes)")
    for message in _messages(model):
        if field := _not_utf8(message):
            raise UnsupportedModel(f"the model's {type(message).__name__}.{field} is not UTF-8 "
                                   f"text, as ONNX requires")
    if model.functions:
        raise UnsupportedModel("the model defines functions of its own; export it without")
    foreign = sorted({opset.domain for opset in model.opset_import} - STANDARD_DOMAINS)
    if foreign:
        raise UnsupportedModel(f"the model uses operators outside the standard sets "
                               f"(domains {', '.join(foreign)}); only ai.onnx and ai.onnx.ml "
                               f"are served")
    for message in _messages(model):
        if isinstance(message, onnx.TensorProto) and (
                message.data_location == onnx.TensorProto.EXTERNAL or message.external_data):
            raise UnsupportedModel(f"the model keeps weights in external files "
                                   f"({message.name or 'a tensor'}); save it as one "
                                   f"self-contained file")
        if isinstance(message, onnx.NodeProto):
            if message.domain not in STANDARD_DOMAINS:
                raise UnsupportedModel(f"operator {message.op_type} is from domain "
                                       f"{message.domain}; only ai.onnx and ai.onnx.ml are served")
            if message.domain != ML_DOMAIN and message.op_type not in ALLOWED_OPS:
                raise UnsupportedModel(
                    f"operator {message.op_type} is not served: only the operators scikit-learn "
                    f"models export to are, none that sizes a tensor from data or loops")


def _not_utf8(message) -> str | None:
    """The name of a text field of ``message`` that holds bytes which are not UTF-8 (protobuf
    hands those back as bytes, not str, and names, domains and docs are text to everything
    downstream), or None."""
    for field, value in message.ListFields():
        if field.type == field.TYPE_STRING and any(
                isinstance(item, bytes) for item in (value if field.is_repeated else [value])):
            return field.name
    return None


def _messages(message):
    """Every protobuf message inside ``message``, itself included, depth first."""
    yield message
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        for item in (value if field.is_repeated else [value]):
            yield from _messages(item)


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
        try:
            session = onnx_session(data)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's many failure types
            raise UnsupportedModel(f"onnxruntime cannot load the model: {_first_line(exc)}") \
                from None
        try:
            algorithm = cls(session, _feeds(session.get_inputs()),
                            *_outputs(session.get_outputs()))
        except UnicodeDecodeError:  # names that are not UTF-8 (inspect refuses them at upload)
            raise UnsupportedModel("the model's input or output names are not UTF-8") from None
        try:
            algorithm.compute_predictions(PROBE_ROWS)  # each answer checked (check_answers)
        except UnsupportedModel:
            raise
        except AnswerError as exc:
            raise UnsupportedModel(str(exc)) from None
        except Exception as exc:  # noqa: BLE001
            raise UnsupportedModel(f"the model fails on the 14 raw features: "
                                   f"{_first_line(exc)}") from None
        return algorithm

    def preprocess(self, rows: list[Any]) -> dict[str, np.ndarray]:
        preprocessing.validate_rows(rows)
        feed = {}
        for name, feature, dtype, rank in self._feeds:
            if dtype is object:
                values = [preprocessing.MISSING if preprocessing.is_missing(row.get(feature))
                          else str(row[feature]).strip() for row in rows]
            else:
                values = [row[feature] for row in rows]
                if np.issubdtype(dtype, np.integer):
                    _check_whole(values, feature, dtype)
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
        # Checked by compute_predictions (check_answers), as every model's answers are.
        return [{"probability": p, "label": str(label)}
                for label, p in zip(np.asarray(labels).ravel().tolist(), positive)]


def _check_whole(values: list, feature: str, dtype) -> None:
    """Numbers for an integer input must be whole and fit it: RowsError naming the rows."""
    info = np.iinfo(dtype)
    problems = {index: [f"{feature}: this model takes whole numbers from {info.min} to "
                        f"{info.max}, got {value!r}"]
                for index, value in enumerate(values)
                if not (float(value).is_integer() and info.min <= value <= info.max)}
    if problems:
        raise RowsError(problems)


# onnxruntime's messages name its source file and C++ function before saying what is wrong.
_RUNTIME_NOISE = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : "
                            r"|\S*onnxruntime_src\S* [^()]*\(.*?\) ")


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
    if label.type != STRING_TYPE:
        raise UnsupportedModel(f"the model's first output ({label.name}) is {label.type}, not "
                               f"a tensor of string labels: train it on the labels "
                               + " and ".join(CLASSES))
    if probabilities.type.startswith("seq(map("):
        return label.name, probabilities.name, True
    if probabilities.type in ("tensor(float)", "tensor(double)"):
        return label.name, probabilities.name, False
    raise UnsupportedModel(f"the model's second output ({probabilities.name}) is "
                           f"{probabilities.type}, not class probabilities")
