"""Train the income classifiers on adult.data, evaluate them on adult.test, write the artifacts.

    python research/train.py [--data-dir DIR] [--out research/artifacts] [--limit N]

Writes two artifacts per classifier, the fitted model as joblib (the research artifact) and the
same model compiled to ONNX (what the service serves), and ``manifest.json`` (each file with its
sha256, accuracy on adult.test, how far the ONNX probabilities are from scikit-learn's, library
versions, training time, and the training rows' feature distributions that served requests are
compared with for drift), which ``manage.py register_models`` reads.
The artifacts directory is ignored by git: models are rebuilt from code and data, never committed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime
import skl2onnx
import sklearn

try:
    from research import adult
except ImportError:  # run as a script: research/ itself is on sys.path
    import adult

from apps.ml import drift
from apps.ml.base import JOBLIB, ONNX
from apps.ml.income_classifier import CLASSIFIERS
from apps.ml.income_classifier import preprocessing
from apps.ml.income_classifier.preprocessing import TARGET

DEFAULT_OUT = adult.ROOT / "research" / "artifacts"
MANIFEST = "manifest.json"


def step(message: str) -> None:
    print(f"[train] {message}", flush=True)


def artifact_stem(classifier) -> str:
    return f"{classifier.name.replace(' ', '_')}-{classifier.version}"


def train(data_dir: Path, out: Path, limit: int | None = None) -> dict:
    started = time.perf_counter()
    step(f"loading adult.data and adult.test from {data_dir}")
    train_rows = adult.load("adult.data", data_dir)[:limit]
    test_rows = adult.load("adult.test", data_dir)[:limit]
    step(f"{len(train_rows)} training rows, {len(test_rows)} held-out rows")

    params = preprocessing.fit(train_rows)
    x_train = preprocessing.transform(train_rows, params)
    y_train = np.array([row[TARGET] for row in train_rows])
    x_test = preprocessing.transform(test_rows, params)
    y_test = np.array([row[TARGET] for row in test_rows])
    # Every classifier trains on the same rows: one profile, listed with each model.
    profile = drift.profile(train_rows, preprocessing.NUMERIC, preprocessing.CATEGORICAL)

    out.mkdir(parents=True, exist_ok=True)
    models = []
    for classifier in CLASSIFIERS:
        step(f"training {classifier.name} {classifier.version}")
        t0 = time.perf_counter()
        estimator = classifier.make_estimator().fit(x_train, y_train)
        seconds = time.perf_counter() - t0
        algorithm = classifier.from_estimator(estimator, params)
        accuracy = float((estimator.predict(x_test) == y_test).mean())
        files = {}
        for artifact_format, dump in ((JOBLIB, algorithm.dump), (ONNX, algorithm.dump_onnx)):
            path = out / f"{artifact_stem(classifier)}.{artifact_format}"
            dump(str(path))
            files[artifact_format] = {"file": path.name, "sha256": adult.sha256_of(path)}
        compiled = classifier.load((out / files[ONNX]["file"]).read_bytes(), ONNX)
        difference = float(np.abs(compiled.predict(x_test) - algorithm.predict(x_test)).max())
        step(f"  accuracy on adult.test {accuracy:.4f}, trained in {seconds:.1f}s; ONNX "
             f"probabilities within {difference:.1e} of scikit-learn's -> "
             + ", ".join(f["file"] for f in files.values()))
        models.append({
            "name": classifier.name,
            "version": classifier.version,
            "description": classifier.description,
            "code": classifier.code(),
            "classes": classifier.classes,
            # What register_models serves; the joblib file stays as the research artifact.
            "artifact": files[ONNX]["file"],
            "format": ONNX,
            "sha256": files[ONNX]["sha256"],
            "files": files,
            "metrics": {
                "accuracy": round(accuracy, 6),
                "evaluated_on": "adult.test",
                "test_rows": len(test_rows),
                "train_rows": len(train_rows),
                "train_seconds": round(seconds, 3),
                "onnx_max_probability_difference": difference,
            },
            "training_profile": profile,
        })

    manifest = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_sha256": adult.SHA256,
        "libraries": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "total_seconds": round(time.perf_counter() - started, 3),
        "models": models,
    }
    # Written last and atomically: a manifest on disk means every artifact it names is complete.
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    step(f"wrote {out / MANIFEST} in {manifest['total_seconds']:.1f}s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with adult.data and adult.test (default: $ADULT_DATA_DIR "
                             "or research/data)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artifacts folder")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N rows of each file (quick runs)")
    args = parser.parse_args(argv)
    try:
        train(args.data_dir or adult.data_dir(), args.out, args.limit)
    except adult.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
