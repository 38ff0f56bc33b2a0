"""The in-process registry: MLModel id -> loaded algorithm object.

The database decides which model serves which status; this map only saves reloading artifacts.
Each gunicorn worker fills it when it starts, before it takes traffic (``warm_up``, called from
the gunicorn config), and otherwise on first use, once per model; a model that failed to load is
tried again after ``RETRY_FAILED_SECONDS``, not on every request. A model is built only from
the bundled folder or the artifact store (as its ``artifact_source`` says), from bytes that
match the sha256 recorded for it, by a class named in the
algorithm catalogue (artifacts.py, apps/ml/catalog.py); anything else is refused with a 503
that says which model is unavailable, while the paths and checksums go to the log. Nothing here
writes to the database, and nothing runs at import time.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time

from django.db import DatabaseError, connections

from apps.endpoints import artifacts, metrics
from apps.endpoints.exceptions import Unavailable
from apps.endpoints.models import MLModel
from apps.ml.base import Algorithm
from apps.ml.catalog import UnknownAlgorithm, algorithm_class

logger = logging.getLogger(__name__)


def load_algorithm(mlmodel: MLModel) -> Algorithm:
    """Verify the artifact and build the model; Unavailable (details in the log) otherwise."""
    label = f"model {mlmodel.pk} ({mlmodel.name} {mlmodel.version})"
    started = time.perf_counter()
    try:
        cls = algorithm_class(mlmodel.code)
        data = artifacts.read_verified(mlmodel.artifact_path, mlmodel.artifact_sha256,
                                       mlmodel.artifact_source)
        algorithm = cls.load(data, mlmodel.artifact_format)
        release_freed_memory()
        seconds = time.perf_counter() - started
        metrics.model_load_seconds.labels(mlmodel.name, mlmodel.version,
                                          mlmodel.artifact_format).observe(seconds)
        logger.info("loaded %s in %.2fs", label, seconds)
        return algorithm
    except artifacts.Missing as exc:
        reason, why = "missing", (f"its artifact is missing ({exc})" + (
            "" if mlmodel.artifact_source == artifacts.STORE else
            ". Train it (python research/train.py) and register it (manage.py register_models)"))
    except artifacts.ChecksumMismatch as exc:
        reason, why = "checksum", str(exc)
    except artifacts.OutsideStore as exc:
        reason, why = "outside_store", str(exc)
    except UnknownAlgorithm as exc:
        reason, why = "unknown_algorithm", str(exc)
    except Exception as exc:  # the loader's own failure: a damaged or foreign file
        reason, why = "load_failed", f"loading failed: {type(exc).__name__}: {exc}"
    metrics.artifacts_refused.labels(mlmodel.name, mlmodel.version, reason).inc()
    raise Unavailable(f"{label} is unavailable", log_detail=f"{label} cannot be loaded: {why}")


def release_freed_memory() -> None:
    """Give the heap that building a model freed back to the system (glibc only).

    Building an onnxruntime session for one of our forests peaks about 55 MB above what the
    session keeps, and glibc holds on to freed memory: without this, every worker's RSS carries
    that peak for each model it loaded (issue 9's measurements).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


# A model that failed to load is not tried again for this long: each try reads and hashes the
# whole artifact (and may unpickle it), which no anonymous client should be able to repeat at will.
RETRY_FAILED_SECONDS = 10


class Registry:
    def __init__(self, clock=time.monotonic):
        self._algorithms: dict[int, tuple[str, Algorithm]] = {}
        self._failures: dict[int, tuple[str, float, Unavailable]] = {}  # id -> sha, when, error
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, mlmodel: MLModel) -> Algorithm:
        entry = self._algorithms.get(mlmodel.pk)
        # Keyed by checksum too: a model whose artifact was re-registered is loaded afresh.
        if entry is not None and entry[0] == mlmodel.artifact_sha256:
            return entry[1]
        with self._lock:
            entry = self._algorithms.get(mlmodel.pk)
            if entry is None or entry[0] != mlmodel.artifact_sha256:
                self._algorithms[mlmodel.pk] = (mlmodel.artifact_sha256, self._load(mlmodel))
                entry = self._algorithms[mlmodel.pk]
        return entry[1]

    def _load(self, mlmodel: MLModel) -> Algorithm:
        failed = self._failures.get(mlmodel.pk)
        if (failed is not None and failed[0] == mlmodel.artifact_sha256
                and self._clock() - failed[1] < RETRY_FAILED_SECONDS):
            raise failed[2]
        try:
            algorithm = load_algorithm(mlmodel)
        except Unavailable as exc:
            logger.warning("%s; not tried again for %ss", exc.log_detail, RETRY_FAILED_SECONDS)
            self._failures[mlmodel.pk] = (mlmodel.artifact_sha256, self._clock(), exc)
            raise
        self._failures.pop(mlmodel.pk, None)
        return algorithm

    def loaded_ids(self) -> list[int]:
        return sorted(self._algorithms)

    def clear(self) -> None:
        with self._lock:
            self._algorithms.clear()
            self._failures.clear()


registry = Registry()


def warm_up() -> list[int]:
    """Load every model that can be asked for predictions, before a worker takes traffic.

    Never raises: a model that cannot load is logged and refused on use (503), and a database
    that does not answer leaves loading to first use. Returns the ids loaded.
    """
    from apps.endpoints import selectors

    started = time.perf_counter()
    try:
        models = list(selectors.serving_models())
    except DatabaseError as exc:
        logger.warning("warm-up skipped, the database did not answer: %s", exc)
        return []
    finally:
        connections.close_all()  # this thread's connection is the one requests would reuse
    loaded = []
    for mlmodel in models:
        try:
            registry.get(mlmodel)
            loaded.append(mlmodel.pk)
        except Unavailable:
            pass  # logged by the registry
    logger.info("warm-up: loaded models %s in %.2fs", loaded, time.perf_counter() - started)
    return loaded
