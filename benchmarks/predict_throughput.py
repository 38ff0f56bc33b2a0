#!/usr/bin/env python
"""Predict throughput of the production configuration: ONNX serving against joblib, one run.

    .venv/bin/python benchmarks/predict_throughput.py [--duration 10] [--workers 2]

Starts what production runs: PostgreSQL (a database of its own on the server of
--database-url, made afresh), gunicorn with docker/backend/gunicorn.conf.py, and nginx with the
project's template in front; then drives it with wrk (apt install wrk) through nginx:

    single row at 1 connection, single row at 16 connections, batches of 100 rows at 4 connections

first with the random forest served from its ONNX artifact, then from its joblib artifact (the
same fitted model, registered as a second version and promoted in its place; gunicorn is started
afresh for each, so each worker holds only what that artifact needs). Prints requests/s, rows/s,
p50 and p99 latency and each worker's RSS after the cases, and the ONNX/joblib ratios.
wrk, nginx, gunicorn and PostgreSQL share this machine's cores: compare ratios across machines,
not absolute figures. Every row is answered and stored (PREDICT_RATE=off, nothing refused).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.adult import EXAMPLE_ROW  # noqa: E402
from tests.live import (SERVER_DIR, free_port, run_script, start_gunicorn,  # noqa: E402
                        start_nginx, stop)

CASES = [  # (label, rows per request, connections)
    ("single row, 1 connection", 1, 1),
    ("single row, 16 connections", 1, 16),
    ("100-row batches, 4 connections", 100, 4),
]
MODEL = "random forest"
JOBLIB_VERSION = "0.0.1-joblib"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BODY_FILE")):read("*a")
"""


def fresh_database(url: str) -> None:
    """Drop and create the database ``url`` names, through the server's postgres database."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"\w+", name):
        raise SystemExit(f"--database-url must name a plain database, not {name!r}")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def manage(env: dict, *args: str) -> str:
    result = run_script([sys.executable, "manage.py", *args], cwd=SERVER_DIR, env=env)
    if result.returncode != 0:
        raise SystemExit(f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def serve(env: dict, artifact_format: str) -> None:
    """Make the random forest's ``artifact_format`` version the production model."""
    version = "0.0.1" if artifact_format == "onnx" else JOBLIB_VERSION
    manage(env, "shell", "-c", (
        "from apps.endpoints import services; from apps.endpoints.models import MLModel; "
        f"services.mlmodel_status_set(mlmodel=MLModel.objects.get(name={MODEL!r}, "
        f"version={version!r}), status='production', created_by='benchmark')"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def workers_of(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(wrk: str, url: str, body: Path, connections: int, seconds: int,
            folder: Path) -> dict:
    script = folder / "post.lua"
    script.write_text(WRK_SCRIPT)
    run = run_script([wrk, f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s",
                      "--latency", "-s", str(script), url],
                     env={**os.environ, "BODY_FILE": str(body)}, timeout=seconds + 120)
    out = run.stdout
    if run.returncode != 0 or "Requests/sec" not in out:
        raise SystemExit(f"wrk failed:\n{out}\n{run.stderr}")
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"{match[1]} requests were not answered 200:\n{out}")
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
            "p50": milliseconds(re.search(r"^\s+50%\s+(\S+)", out, re.M)[1]),
            "p99": milliseconds(re.search(r"^\s+99%\s+(\S+)", out, re.M)[1])}


def measure(args, env: dict, artifact_format: str, folder: Path) -> list[dict]:
    serve(env, artifact_format)
    app_port, nginx_port = free_port(), free_port()
    # Recycling off: a worker replaced during a case would show the RSS of one just started.
    app = start_gunicorn(app_port, {**env, "GUNICORN_ACCESSLOG": "", "GUNICORN_MAX_REQUESTS": "0"},
                         workers=args.workers)
    results = []
    try:
        nginx = start_nginx(folder, nginx_port, upstream=f"127.0.0.1:{app_port}",
                            static_root=folder, max_body_bytes=1024 * 1024, access_log=False)
        try:
            url = f"http://127.0.0.1:{nginx_port}/api/v1/classifier/predict"
            for label, rows, connections in CASES:
                body = folder / f"body-{rows}.json"
                body.write_text(json.dumps(EXAMPLE_ROW if rows == 1 else [EXAMPLE_ROW] * rows))
                run_wrk(args.wrk, url, body, connections, min(2, args.duration), folder)  # warm
                figures = run_wrk(args.wrk, url, body, connections, args.duration, folder)
                results.append({"case": label, "format": artifact_format, "rows": rows,
                                **figures})
            rss = [rss_mb(pid) for pid in workers_of(app.pid)]
        finally:
            stop(nginx)
    finally:
        stop(app)
    for result in results:
        result["rss"] = rss
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per case (10)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="gunicorn workers (default: one per core)")
    parser.add_argument("--database-url",
                        default="postgres://postgres@127.0.0.1:5432/predict_benchmark",
                        help="a PostgreSQL database this run may drop and create")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    args = parser.parse_args(argv)
    if not shutil.which(args.wrk) or not shutil.which("nginx"):
        raise SystemExit("needs wrk and nginx (apt-get install wrk nginx-light)")

    fresh_database(args.database_url)
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "benchmark-" + "x" * 50,
           "DATABASE_URL": args.database_url, "PREDICT_RATE": "off", "LOG_LEVEL": "WARNING"}
    env.pop("REDIS_URL", None)
    manage(env, "migrate", "--noinput", "--verbosity", "0")
    manage(env, "register_models")
    manifest = json.loads((Path(env.get("ML_ARTIFACTS_DIR") or SERVER_DIR.parent.parent
                                / "research" / "artifacts") / "manifest.json").read_text())
    joblib_file = next(m for m in manifest["models"] if m["name"] == MODEL)["files"]["joblib"]
    manage(env, "shell", "-c", (
        "from apps.endpoints import services; from apps.endpoints.models import MLModel; "
        f"rf = MLModel.objects.get(name={MODEL!r}, version='0.0.1'); "
        f"services.mlmodel_create(endpoint=rf.endpoint, name=rf.name, "
        f"version={JOBLIB_VERSION!r}, code=rf.code, owner='benchmark', "
        f"artifact_path={joblib_file['file']!r}, status='archived')"))

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for artifact_format in ("onnx", "joblib"):
            folder = Path(tmp) / artifact_format
            folder.mkdir()
            results += measure(args, env, artifact_format, folder)

    print(f"predict through nginx -> gunicorn ({args.workers} workers, the project's config) -> "
          f"PostgreSQL, driven by wrk on the same {os.cpu_count()} cores; {args.duration:g} s a "
          f"case; the random forest served from each artifact")
    print(f"{'case':<32}{'artifact':<10}{'req/s':>9}{'rows/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"  worker RSS MB")
    for label, _, _ in CASES:
        pair = {r["format"]: r for r in results if r["case"] == label}
        for fmt in ("onnx", "joblib"):
            r = pair[fmt]
            print(f"{label if fmt == 'onnx' else '':<32}{fmt:<10}{r['rps']:>9.0f}"
                  f"{r['rps'] * r['rows']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}  "
                  + ", ".join(f"{m:.0f}" for m in r["rss"]))
        onnx, joblib = pair["onnx"], pair["joblib"]
        print(f"{'':<32}{'ratio':<10}{onnx['rps'] / joblib['rps']:>8.2f}x{'':>10}"
              f"{onnx['p50'] / joblib['p50']:>8.2f}x{onnx['p99'] / joblib['p99']:>8.2f}x"
              f"  (onnx / joblib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
