"""Prometheus metrics: what the service served, how fast, and what it refused.

Under gunicorn every worker is a process of its own; prometheus-client's multiprocess mode has
each write its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (the gunicorn config makes a
fresh one per server), and ``/metrics`` adds up every worker's files, whichever worker answers
the scrape. Without that directory (``make run``, the tests) the process's own registry is used.

Drift gauges are different: they are computed from the database at each scrape (``Drift``),
so whichever worker answers reports the same values, and a scrape that cannot read the database
still answers every other metric.

``/metrics`` is not for the public: nginx does not pass it on, so Prometheus scrapes each app
instance directly; with ``METRICS_TOKEN`` set, a scrape must also send it as a bearer token.
"""
from __future__ import annotations

import hmac
import logging
import os
import time
from collections import Counter as Tally

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpResponse
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Histogram, generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from apps.endpoints import selectors
from apps.endpoints.exceptions import Conflict

logger = logging.getLogger(__name__)

PREFIX = "mlregistry"
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# Model calls take microseconds (ONNX) to milliseconds (joblib, batches): finer low buckets.
MODEL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0)

predictions = Counter(
    f"{PREFIX}_predictions", "Rows answered and stored, by the model that answered.",
    ["endpoint", "model", "version", "status", "ab_test", "label"])
request_seconds = Histogram(
    f"{PREFIX}_request_seconds", "Whole requests, from the first middleware to the response.",
    ["route", "method", "code"])
model_seconds = Histogram(
    f"{PREFIX}_model_seconds", "The model call alone: preprocess, score and postprocess a batch.",
    ["endpoint", "model", "version"], buckets=MODEL_BUCKETS)
feedback = Counter(
    f"{PREFIX}_feedback", "Feedback recorded, by the model that served the request.",
    ["endpoint", "model", "version"])
feedback_agreeing = Counter(
    f"{PREFIX}_feedback_agreeing", "Feedback that agrees with the label the model served.",
    ["endpoint", "model", "version"])
shadow_predictions = Counter(
    f"{PREFIX}_shadow_predictions", "Rows scored and stored by a shadow model.",
    ["endpoint", "model", "version"])
shadow_failures = Counter(
    f"{PREFIX}_shadow_failures", "Requests a shadow model could not score (production answered).",
    ["endpoint", "model", "version"])
rate_limited = Counter(
    f"{PREFIX}_rate_limited_requests", "Predict requests refused by the rate limit.")
artifacts_refused = Counter(
    f"{PREFIX}_artifacts_refused", "Model loads refused: checksum, store, catalogue or loader.",
    ["model", "version", "reason"])
model_load_seconds = Histogram(
    f"{PREFIX}_model_load_seconds", "Time to verify and load a model's artifact.",
    ["model", "version", "format"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def count_predictions(*, endpoint: str, status: str, stored) -> None:
    """One increment per (model, A/B test, label) of a request's stored rows."""
    tally = Tally((r.mlmodel.name, r.mlmodel.version, r.ab_test_id, r.response) for r in stored)
    for (name, version, ab_test, label), n in tally.items():
        predictions.labels(endpoint, name, version, status, str(ab_test or ""), label).inc(n)


class RequestTimer:
    """Middleware: every request's duration, by its URL pattern (bounded, unlike paths)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.view_name or match.route) if match else "unmatched"
        # Labels from what the service defines, never from what a client may invent: any HTTP
        # method name is accepted on the wire, and each would be a series of its own.
        method = request.method if request.method in METHODS else "other"
        request_seconds.labels(route, method, str(response.status_code)).observe(
            time.perf_counter() - started)
        return response


class Drift:
    """A collector of each serving model's drift over its last DRIFT_WINDOW requests (answered
    or scored as a shadow), read from the database at scrape time; models without a training
    profile or without requests have no series."""

    MODEL = ["endpoint", "model", "version"]

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(f"{PREFIX}_drift_psi", "Population Stability Index of a feature "
                              "over the model's last DRIFT_WINDOW requests against its training "
                              "data; above 0.2 is drift.", labels=[*self.MODEL, "feature"]),
            GaugeMetricFamily(f"{PREFIX}_drift_features_drifted", "Features whose PSI is above "
                              "0.2 over the model's last DRIFT_WINDOW requests.",
                              labels=self.MODEL),
            GaugeMetricFamily(f"{PREFIX}_drift_requests", "Requests the drift gauges are "
                              "computed over (at most DRIFT_WINDOW).", labels=self.MODEL),
        )

    def describe(self):
        return self._families()

    def collect(self):
        psi, drifted, requests = families = self._families()
        try:
            for mlmodel in selectors.drift_watched_models():
                try:
                    result = selectors.model_drift(mlmodel, last=settings.DRIFT_WINDOW)
                except Conflict as exc:  # a profile that cannot be read: that model only
                    logger.warning("no drift metrics for model %s: %s", mlmodel.pk,
                                   exc.log_detail or exc.detail)
                    continue
                if not result["requests"]:
                    continue
                labels = [mlmodel.endpoint.name, mlmodel.name, mlmodel.version]
                for feature in result["features"]:
                    psi.add_metric([*labels, feature["feature"]], feature["psi"])
                drifted.add_metric(labels, len(result["drifted"]))
                requests.add_metric(labels, result["requests"])
        except DatabaseError:
            # Half a set of series would read as models without drift: report none this time.
            logger.warning("drift metrics skipped: the database could not be read",
                           exc_info=True)
            return self._families()
        return families


# Not in the process's default registry: its samples are read without a database (by tests,
# and by the multiprocess files' collector), and drift is read from the database alone.
drift_registry = CollectorRegistry()
drift_registry.register(Drift())


def metrics_view(request):
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(sent.encode(), token.encode()):
            return HttpResponse("a bearer token (METRICS_TOKEN) is needed\n", status=401,
                                content_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry) + generate_latest(drift_registry),
                        content_type=CONTENT_TYPE_LATEST)
