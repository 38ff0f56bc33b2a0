"""Prometheus metrics: what the service served, how fast, and what it refused.

Under gunicorn every worker is a process of its own; prometheus-client's multiprocess mode has
each write its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (the gunicorn config makes a
fresh one per server), and ``/metrics`` adds up every worker's files, whichever worker answers
the scrape. Without that directory (``make run``, the tests) the process's own registry is used.

``/metrics`` is not for the public: nginx does not pass it on, so Prometheus scrapes each app
instance directly; with ``METRICS_TOKEN`` set, a scrape must also send it as a bearer token.
"""
from __future__ import annotations

import hmac
import os
import time
from collections import Counter as Tally

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Histogram, generate_latest, multiprocess)

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
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
