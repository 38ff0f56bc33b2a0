"""gunicorn settings, each overridable from the environment.

Sync workers: a prediction is CPU-bound (JSON, validation, the model, the INSERT's encoding), so
one request per process is the honest model; each worker's onnxruntime sessions use one thread.
No preload: the registry is per process by design. Each worker loads the models it serves when
it starts, before it takes a request (``post_worker_init``), so a recycled worker
does not make its first clients wait for the load; the others serve meanwhile.

Workers are recycled after ``GUNICORN_MAX_REQUESTS`` requests so a slow leak cannot grow without
bound. Started together and fed alike, they would all reach that count together and reload at
once; ``post_fork`` spreads the first generation evenly over one more period instead.

Metrics: every worker writes to ``PROMETHEUS_MULTIPROC_DIR`` and /metrics adds them up.
"""
import logging
import multiprocessing
import os
import random
import shutil
import tempfile

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = 0  # recycle_after spreads the workers instead
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None
# The common log format, plus the request's duration and the worker that served it.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms %(p)s'
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# Only the proxy's forwarded headers are trusted (the compose network, or loopback in CI).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


# Prometheus multiprocess mode: each worker writes its samples to files here and /metrics adds
# them up (apps/endpoints/metrics.py). Set before any worker imports prometheus-client; a server
# of its own gets a folder of its own, emptied when it starts.
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mlregistry-metrics-")


def on_starting(server):
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def recycle_after(age: int, workers: int, base: int) -> int:
    """How many requests a worker serves before it is replaced.

    ``age`` numbers workers in the order gunicorn starts them (1, 2, ...). The first generation
    is spread evenly over [base, 2 x base); a replacement serves base requests (plus up to 5%),
    which keeps the spacing the first generation made.
    """
    if age <= workers:
        return base + (age - 1) * base // workers
    return base + random.randint(0, base // 20)


def post_fork(server, worker):
    if max_requests > 0:
        worker.max_requests = recycle_after(worker.age, server.num_workers, max_requests)


def post_worker_init(worker):
    from apps.endpoints.registry import warm_up

    loaded = warm_up()
    logging.getLogger("gunicorn.error").info(
        "worker %s ready: models %s loaded, recycled after %s requests", os.getpid(), loaded,
        worker.max_requests)
