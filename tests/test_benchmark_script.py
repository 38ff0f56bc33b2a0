"""The benchmarks run end to end (their figures are for people, not asserted)."""
import os
import re
import shutil
import sys

import pytest
from django.db import connection

from tests.live import free_port, run_script

pytestmark = [pytest.mark.live, pytest.mark.production]


def test_the_rate_limit_benchmark_prints_a_row_per_setup_and_round():
    run = run_script([sys.executable, "benchmarks/predict_rate_limit.py", "--requests", "20",
                      "--concurrency", "2", "--rounds", "1", "--port", str(free_port())])
    assert run.returncode == 0, run.stdout + run.stderr
    rows = re.findall(r"^\s+1  (off|memory|redis)\s+[\d.]+ \([\d.]+x\)", run.stdout, re.M)
    assert rows == ["off", "memory", "redis"], run.stdout


def test_the_throughput_benchmark_prints_every_case_for_both_artifacts():
    """Once per CI run: on the PostgreSQL pass, which has a server it may make a database on."""
    if connection.vendor != "postgresql":
        pytest.skip("runs with the PostgreSQL pass (it needs a PostgreSQL server)")
    missing = [tool for tool in ("wrk", "nginx") if not shutil.which(tool)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the throughput benchmark: {missing} missing")
        pytest.skip(f"needs {missing} (apt-get install wrk nginx-light)")
    s = connection.settings_dict
    url = (f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/"
           f"predict_benchmark_test")
    run = run_script([sys.executable, "benchmarks/predict_throughput.py", "--duration", "1",
                      "--database-url", url])
    assert run.returncode == 0, run.stdout + run.stderr
    rows = re.findall(r"^(.{32})(onnx|joblib)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+\d+",
                      run.stdout, re.M)
    assert [(label.strip(), fmt) for label, fmt, *_ in rows] == [
        ("single row, 1 connection", "onnx"), ("", "joblib"),
        ("single row, 16 connections", "onnx"), ("", "joblib"),
        ("100-row batches, 4 connections", "onnx"), ("", "joblib")], run.stdout
    assert len(re.findall(r"ratio\s+[\d.]+x", run.stdout)) == 3, run.stdout
