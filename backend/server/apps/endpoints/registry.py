"""The in-process registry: MLModel id -> loaded algorithm object.

The database decides which model serves which status; this map only saves reloading artifacts.
Each process fills it lazily, once per model, on first use. An artifact is checked against the
sha256 stored for its model before anything is unpickled, so a swapped or damaged file is refused
(503) rather than executed. Nothing here writes to the database, and nothing runs at import time.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from pathlib import Path

from django.conf import settings

from apps.endpoints.exceptions import Unavailable
from apps.endpoints.models import MLModel
from apps.ml.base import Algorithm
from apps.ml.checksums import sha256_file as file_sha256

logger = logging.getLogger(__name__)


def artifact_file(mlmodel: MLModel) -> Path:
    path = Path(mlmodel.artifact_path)
    return path if path.is_absolute() else Path(settings.ML_ARTIFACTS_DIR) / path


def import_algorithm(code: str) -> type[Algorithm]:
    module_name, _, class_name = code.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImportError(f"cannot import algorithm {code!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise ImportError(f"{code!r} is not an Algorithm class")
    return cls


def load_algorithm(mlmodel: MLModel) -> Algorithm:
    """Verify the artifact and load it; raises Unavailable saying what is wrong."""
    label = f"model {mlmodel.pk} ({mlmodel.name} {mlmodel.version})"
    path = artifact_file(mlmodel)
    if not path.is_file():
        raise Unavailable(
            f"{label} cannot be loaded: its artifact {path} is missing. Train it "
            f"(python research/train.py) and register it (manage.py register_models)."
        )
    actual = file_sha256(path)
    if actual != mlmodel.artifact_sha256:
        raise Unavailable(
            f"{label} cannot be loaded: its artifact {path} has sha256 {actual}, but the registry "
            f"expects {mlmodel.artifact_sha256}. The file was altered or replaced; it was not loaded."
        )
    try:
        return import_algorithm(mlmodel.code).load(str(path))
    except Exception as exc:
        raise Unavailable(f"{label} cannot be loaded from {path}: {exc}") from exc


class Registry:
    def __init__(self):
        self._algorithms: dict[int, tuple[str, Algorithm]] = {}
        self._lock = threading.Lock()

    def get(self, mlmodel: MLModel) -> Algorithm:
        entry = self._algorithms.get(mlmodel.pk)
        # Keyed by checksum too: a model whose artifact was re-registered is loaded afresh.
        if entry is not None and entry[0] == mlmodel.artifact_sha256:
            return entry[1]
        with self._lock:
            entry = self._algorithms.get(mlmodel.pk)
            if entry is None or entry[0] != mlmodel.artifact_sha256:
                started = time.perf_counter()
                algorithm = load_algorithm(mlmodel)
                self._algorithms[mlmodel.pk] = (mlmodel.artifact_sha256, algorithm)
                logger.info("loaded %s %s (id %s) in %.2fs", mlmodel.name, mlmodel.version,
                            mlmodel.pk, time.perf_counter() - started)
                entry = self._algorithms[mlmodel.pk]
        return entry[1]

    def loaded_ids(self) -> list[int]:
        return sorted(self._algorithms)

    def clear(self) -> None:
        with self._lock:
            self._algorithms.clear()


registry = Registry()
