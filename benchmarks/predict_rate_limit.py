#!/usr/bin/env python
"""What the per-client rate limit costs predict: throughput and latency through gunicorn.

    .venv/bin/python benchmarks/predict_rate_limit.py [--requests 800] [--rounds 2]

Starts gunicorn with the project's config on a throwaway SQLite database (or --database-url),
three ways, interleaved round by round so drift hits them alike: the limit off (the baseline),
counted in the per-process memory cache, and counted in Redis (--redis-url). The budget is set
far above what the run sends, so every request is counted and none refused. Prints requests per
second and p50/p99 latency of each run, and each as a ratio to the baseline's median.
Client and server share this machine's cores: compare ratios, not absolute figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.adult import EXAMPLE_ROW as ROW  # noqa: E402
from tests.live import SERVER_DIR, run_script, start_gunicorn, stop  # noqa: E402

COUNTED = "1000000/second"  # every request counted, none refused


def manage(env: dict, *args: str) -> None:
    result = run_script([sys.executable, "manage.py", *args], cwd=SERVER_DIR, env=env)
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stderr}")


def measure(url: str, n: int, concurrency: int, workers: int) -> tuple[float, float, float]:
    with requests.Session() as warm:  # every worker loads the model before the clock starts
        for _ in range(workers * 10):
            warm.post(url, json=ROW, timeout=30).raise_for_status()

    def one(_):
        started = time.perf_counter()
        response = requests.post(url, json=ROW, timeout=30)
        if response.status_code != 200:
            raise SystemExit(f"{response.status_code} {response.text[:200]}")
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(n)))
    elapsed = time.perf_counter() - started
    return n / elapsed, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800, help="per run (default 800)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--database-url", default=None,
                        help="default: a new SQLite file in a temporary folder")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "benchmark-" + "x" * 50,
               "DATABASE_URL": args.database_url or f"sqlite:///{tmp}/bench.sqlite3"}
        env.pop("REDIS_URL", None)
        manage(env, "migrate", "--noinput", "--verbosity", "0")
        manage(env, "register_models")
        setups = {"off": {"PREDICT_RATE": "off"},
                  "memory": {"PREDICT_RATE": COUNTED},
                  "redis": {"PREDICT_RATE": COUNTED, "REDIS_URL": args.redis_url}}
        runs = []
        for round_ in range(1, args.rounds + 1):
            for name, extra in setups.items():
                server = start_gunicorn(args.port, {**env, **extra}, workers=args.workers)
                try:
                    figures = measure(f"http://127.0.0.1:{args.port}/api/v1/classifier/predict",
                                      args.requests, args.concurrency, args.workers)
                finally:
                    stop(server)
                runs.append((round_, name, *figures))

    base_rps = statistics.median(r[2] for r in runs if r[1] == "off")
    base_p50 = statistics.median(r[3] for r in runs if r[1] == "off")
    base_p99 = statistics.median(r[4] for r in runs if r[1] == "off")
    print(f"predict through gunicorn ({args.workers} workers), {args.requests} requests per run, "
          f"{args.concurrency} clients; ratios against the median 'off' run")
    print(f"{'round':>5}  {'limit':<7} {'req/s':>14}  {'p50 ms':>14}  {'p99 ms':>14}")
    for round_, name, rps, p50, p99 in runs:
        print(f"{round_:>5}  {name:<7} {rps:7.1f} ({rps / base_rps:4.2f}x)  "
              f"{p50 * 1000:6.1f} ({p50 / base_p50:4.2f}x)  {p99 * 1000:6.1f} ({p99 / base_p99:4.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
