"""Train the income classifiers on adult.data, evaluate them on adult.test, write the artifacts.

    python research/train.py [--data-dir DIR] [--out research/artifacts] [--limit N]

Writes one joblib artifact per classifier and ``manifest.json`` (sha256 of each artifact, accuracy
on adult.test, library versions, training time), which ``manage.py register_models`` reads.
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
import sklearn

try:
    from research import adult
except ImportError:  # run as a script: research/ itself is on sys.path
    import adult

from apps.ml.income_classifier import CLASSIFIERS
from apps.ml.income_classifier import preprocessing
from apps.ml.income_classifier.preprocessing import TARGET

DEFAULT_OUT = adult.ROOT / "research" / "artifacts"
MANIFEST = "manifest.json"


def step(message: str) -> None:
    print(f"[train] {message}", flush=True)


def artifact_name(classifier) -> str:
    return f"{classifier.name.replace(' ', '_')}-{classifier.version}.joblib"


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

    out.mkdir(parents=True, exist_ok=True)
    models = []
    for classifier in CLASSIFIERS:
        step(f"training {classifier.name} {classifier.version}")
        t0 = time.perf_counter()
        estimator = classifier.make_estimator().fit(x_train, y_train)
        seconds = time.perf_counter() - t0
        algorithm = classifier(estimator, params)
        accuracy = float((estimator.predict(x_test) == y_test).mean())
        path = out / artifact_name(classifier)
        algorithm.dump(str(path))
        step(f"  accuracy on adult.test {accuracy:.4f}, trained in {seconds:.1f}s, "
             f"{path.stat().st_size / 1e6:.1f} MB -> {path}")
        models.append({
            "name": classifier.name,
            "version": classifier.version,
            "description": classifier.description,
            "code": classifier.code(),
            "classes": classifier.classes,
            "artifact": path.name,
            "sha256": adult.sha256_of(path),
            "metrics": {
                "accuracy": round(accuracy, 6),
                "evaluated_on": "adult.test",
                "test_rows": len(test_rows),
                "train_rows": len(train_rows),
                "train_seconds": round(seconds, 3),
            },
        })

    manifest = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_sha256": adult.SHA256,
        "libraries": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
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
